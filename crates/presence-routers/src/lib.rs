//! Built-in routers.
