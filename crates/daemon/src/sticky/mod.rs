//! Socket.IO sticky balancer.
