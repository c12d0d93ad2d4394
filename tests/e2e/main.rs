//! keel's one integration/e2e test binary; each area adds a module.

mod cri_backend;
