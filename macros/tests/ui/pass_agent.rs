#![allow(unused_imports, dead_code)]
use ovid::{Context, Message};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Message)]
struct Ping;

#[derive(Serialize, Deserialize, Message)]
struct Pong;

#[derive(Default, Serialize, Deserialize)]
struct Echo;

#[ovid::agent]
impl Echo {
    fn on_ping(&mut self, _ctx: &mut Context, _ping: Ping) -> Pong {
        Pong
    }

    #[handler]
    fn pong_received(&mut self, ctx: &mut Context, _pong: Pong) {
        ctx.print("pong");
    }

    fn on_start(&mut self, ctx: &mut Context) {
        ctx.set_timer("t", std::time::Duration::from_secs(1));
    }

    fn on_timer(&mut self, _ctx: &mut Context, _name: &str) {}

    fn helper(&self) -> u32 {
        1
    }
}

fn main() {
    use ovid::Agent;
    assert_eq!(Echo.accepts(), &["Ping", "Pong"]);
    assert_eq!(Echo.helper(), 1);
}
