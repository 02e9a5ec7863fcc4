//! Network-namespace test bed for wgpunch end-to-end tests.
