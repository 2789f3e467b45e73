//! Presenced's built-in presence routers, one module each, and the conformance suite every
//! router (built-in or not) is tested with.
//!
//! - [`example`]: the router contract's example (`always_send_to_users`, `blacklisted_users`).
//! - [`direct_rooms`]: presence between members of rooms either marks direct (`m.direct`).
//! - [`user_lists`]: restricting; each user's allow and deny lists in their account data.
//! - [`organisation`]: every member of the organisation (this server's users, and those of
//!   listed servers) sees every other.
//! - [`shared_rooms`]: the restricting mode's shared-room delivery (served by the engine).
//! - [`local_only`]: restricting; local users' presence to no other server, or only to listed
//!   servers.
//! - [`conformance`] and [`router_conformance!`]: checks of the router contract.
//! - [`consistency`]: the checker of `presenced routers check`, which tests a configured
//!   router's two methods against each other on generated or recorded states.
//!
//! [`register_builtin`] adds every built-in router to a [`RouterRegistry`] under its names.

use presence_router::RouterRegistry;

pub mod conformance;
pub mod consistency;
pub mod direct_rooms;
pub mod example;
pub mod local_only;
pub mod organisation;
pub mod shared_rooms;
pub mod user_lists;

pub use example::{
    EXAMPLE_ROUTER_ALIAS, EXAMPLE_ROUTER_NAME, ExamplePresenceRouter, ExampleRouterConfig,
};

/// The namespace of the built-in routers' full names (`presenced.routers.ExamplePresenceRouter`).
/// A name in it that is not registered is a mistyped built-in, never a Python module.
pub const BUILTIN_NAMESPACE: &str = "presenced.routers.";

/// Registers every built-in router in `registry`: the example router under
/// [`EXAMPLE_ROUTER_NAME`] and [`EXAMPLE_ROUTER_ALIAS`], `shared_rooms`, `local_only`,
/// `organisation`, `direct_rooms` and `user_lists`.
pub fn register_builtin(registry: &mut RouterRegistry) {
    example::register(registry);
    shared_rooms::register(registry);
    local_only::register(registry);
    organisation::register(registry);
    direct_rooms::register(registry);
    user_lists::register(registry);
}

/// The router authors' guide, `docs/module-authors.md`: its Rust examples are compiled as
/// doctests so that the guide keeps up with the API.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/module-authors.md")]
mod module_authors_guide {}

#[cfg(test)]
mod tests {
    /// The guide's complete router is the example's code, so that `cargo test` (which builds
    /// examples with the crate's lints) checks what the guide shows.
    #[test]
    fn the_guides_router_is_the_buddy_router_example() {
        let guide = include_str!("../../../docs/module-authors.md");
        let example = include_str!("../examples/buddy_router.rs");
        let section = &guide[guide.find("## A complete router").unwrap()..];
        let start = section.find("```rust\n").unwrap() + "```rust\n".len();
        let code = &section[start..];
        let code = &code[..code.find("```\n").unwrap()];
        let begin = example.find("// guide: begin\n").unwrap() + "// guide: begin\n".len();
        let end = example.find("// guide: end\n").unwrap();
        assert_eq!(code, &example[begin..end]);
    }
}
