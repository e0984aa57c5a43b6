//! Webhook and callback delivery: built in the dispatcher issue (see the issue tracker).
