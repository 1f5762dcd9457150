//! # agentos-abi — the contract
