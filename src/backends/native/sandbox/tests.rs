//! Integration tests of sandboxes on the real CNI plugins (root only).
