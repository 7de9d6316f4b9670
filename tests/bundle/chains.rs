//! Guest data through snapshot chains and split storages.
