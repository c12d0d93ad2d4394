//! Unit tests of the probe handlers.
