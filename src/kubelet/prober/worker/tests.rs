//! Unit tests of the probe worker.
