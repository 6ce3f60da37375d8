//! Ecosystem files and CLI options into one validated [`corral_proto::AppSpec`].
