//! The Corral daemon: supervisor, cluster primary, sticky balancer, relay.
