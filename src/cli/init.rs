//! `goldset init`: create the database and its schema.

use super::{Context, Create};
use goldset::ops::OpError;

/// Creates (or migrates) the database and shows what it holds.
pub fn run(ctx: &Context) -> Result<i32, OpError> {
    let mut store = ctx.open_store(Create::Yes, true)?;
    let inventory = store.snapshot()?.inventory()?;
    ctx.out.status("init", &store.location(), &inventory);
    Ok(0)
}
