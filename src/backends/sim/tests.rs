//! Tests of the simulated runtime (in a separate file: they are long).
