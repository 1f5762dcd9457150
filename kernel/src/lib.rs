//! # agentos-kernel — the kernel
