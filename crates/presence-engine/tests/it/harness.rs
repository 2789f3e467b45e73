//! A driver for the engine in tests: applies inputs, calls the routers as the server does,
//! advances a manual clock second by second, and reads syncs by user name.

use std::sync::Arc;

use futures::executor::block_on;
use presence_engine::{
    Effects, Engine, EngineConfig, Input, PresenceMode, Routed, StreamPos, Timers, UserIdx,
};
use presence_router::{
    DeviceId, InterestedUsers, ModuleApi, PresenceState, RoomId, RouterModule, RouterSet,
    ServerName, UserId, UserPresenceState,
};
use presence_routers::ExamplePresenceRouter;

pub(crate) const START: u64 = 1_700_000_000_000;

pub(crate) struct H {
    pub(crate) e: Engine,
    pub(crate) now: u64,
    pub(crate) routers: RouterSet,
    /// Every effect produced, in order.
    pub(crate) log: Vec<Effects>,
}

pub(crate) fn server() -> ServerName {
    ServerName::parse("test").unwrap()
}

pub(crate) fn uid(name: &str) -> UserId {
    if name.contains(':') {
        UserId::parse(&format!("@{name}")).unwrap()
    } else {
        UserId::parse(&format!("@{name}:test")).unwrap()
    }
}

pub(crate) fn room(name: &str) -> RoomId {
    RoomId::parse(&format!("!{name}:test")).unwrap()
}

pub(crate) fn dev(name: &str) -> Option<DeviceId> {
    Some(DeviceId::parse(name).unwrap())
}

impl H {
    pub(crate) fn new() -> Self {
        Self::with(|_| {})
    }

    pub(crate) fn with(f: impl FnOnce(&mut EngineConfig)) -> Self {
        let mut cfg = EngineConfig::new(server());
        f(&mut cfg);
        Self {
            e: Engine::new(cfg),
            now: START,
            routers: RouterSet::new(std::time::Duration::from_secs(1)),
            log: Vec::new(),
        }
    }

    pub(crate) fn timers(t: Timers) -> Self {
        Self::with(|c| c.timers = t)
    }

    pub(crate) fn mode(mode: PresenceMode) -> Self {
        Self::with(|c| c.mode = mode)
    }

    /// Adds the example router with these always-send and blacklisted users.
    pub(crate) fn example_router(&mut self, always: &[&str], blacklisted: &[&str]) {
        let cfg = serde_json::json!({
            "always_send_to_users": always.iter().map(|n| uid(n).to_string()).collect::<Vec<_>>(),
            "blacklisted_users": blacklisted.iter().map(|n| uid(n).to_string()).collect::<Vec<_>>(),
        });
        let parsed = ExamplePresenceRouter::parse_config(&cfg).unwrap();
        let r = ExamplePresenceRouter::new(parsed, ModuleApi::detached(server()));
        self.routers.push("example", Arc::new(r));
    }

    pub(crate) fn u(&mut self, name: &str) -> UserIdx {
        self.e.intern_user(&uid(name))
    }

    pub(crate) fn run(&mut self, inputs: Vec<Input>) -> Effects {
        let applied = self.e.apply(self.now, inputs);
        self.finish(applied)
    }

    fn finish(&mut self, applied: presence_engine::Applied) -> Effects {
        let routes = match applied.batch() {
            Some(b) => block_on(self.routers.get_users_for_states(b)),
            None => Default::default(),
        };
        let fx = self.e.finish(applied, &routes);
        self.log.push(fx.clone());
        fx
    }

    /// Advances the clock by `ms`, running due timers every second, as the server does.
    pub(crate) fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now = (self.now + 1000).min(end);
            let applied = self.e.tick(self.now);
            self.finish(applied);
        }
    }

    pub(crate) fn put(&mut self, name: &str, state: PresenceState, msg: Option<&str>) -> Effects {
        let user = self.u(name);
        self.run(vec![Input::SetPresence {
            user,
            device: dev("dev-1"),
            state,
            status_msg: msg.map(Arc::from),
        }])
    }

    pub(crate) fn sync_start(&mut self, name: &str, device: &str, state: PresenceState) {
        let user = self.u(name);
        self.run(vec![Input::SyncStarted {
            user,
            device: dev(device),
            state,
        }]);
    }

    pub(crate) fn sync_end(&mut self, name: &str, device: &str) {
        let user = self.u(name);
        self.run(vec![Input::SyncEnded {
            user,
            device: dev(device),
        }]);
    }

    pub(crate) fn state(&mut self, name: &str) -> PresenceState {
        let user = self.u(name);
        self.e.record(user).state
    }

    pub(crate) fn get(&mut self, name: &str) -> UserPresenceState {
        let user = self.u(name);
        self.e.presence(user)
    }

    pub(crate) fn join(&mut self, room_name: &str, user: &str) -> Effects {
        let fx = self.e.join(self.now, &room(room_name), &uid(user));
        self.log.push(fx.clone());
        fx
    }

    /// A sync of `reader` as the server does it: routers first, then the engine.
    pub(crate) fn read(
        &mut self,
        reader: &str,
        since: Option<StreamPos>,
    ) -> (Vec<UserPresenceState>, StreamPos) {
        let r = self.u(reader);
        let interest = block_on(self.routers.get_interested_users(&uid(reader)));
        let read = match interest {
            InterestedUsers::Users(users) => {
                let users = self.e.resolve_users(&users);
                self.e.sync(r, since, Routed::Users(&users))
            }
            InterestedUsers::All => {
                let c = self.e.all_candidates(r, since);
                let routes = match c.routes() {
                    Some(routes) => routes.clone(),
                    None => {
                        let routes = block_on(self.routers.get_users_for_states(c.batch()));
                        self.e.cache_routes(&c, routes)
                    }
                };
                let set = routes.get(&uid(reader));
                self.e.sync(
                    r,
                    since,
                    Routed::All {
                        candidates: &c,
                        states: set,
                    },
                )
            }
        };
        let states = read.users.iter().map(|&u| self.e.presence(u)).collect();
        (states, read.next_token)
    }

    /// Names (localparts, or `local:server` for remote users) seen by a sync, sorted.
    pub(crate) fn names(
        &mut self,
        reader: &str,
        since: Option<StreamPos>,
    ) -> (Vec<String>, StreamPos) {
        let (states, tok) = self.read(reader, since);
        let mut names: Vec<String> = states.iter().map(|s| short(&s.user_id)).collect();
        let before = names.len();
        names.sort();
        names.dedup();
        assert_eq!(
            before,
            names.len(),
            "a user appeared twice in one sync: {names:?}"
        );
        (names, tok)
    }
}

pub(crate) fn short(u: &UserId) -> String {
    if u.server_name() == "test" {
        u.localpart().to_owned()
    } else {
        u.as_str()[1..].to_owned()
    }
}

pub(crate) fn names(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}
