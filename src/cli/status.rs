//! `goldset status`: what the database holds.

use super::Context;
use goldset::ops::OpError;

/// Shows the database's inventory.
pub fn run(ctx: &Context) -> Result<i32, OpError> {
    let mut store = ctx.open_existing()?;
    let inventory = store.snapshot()?.inventory()?;
    ctx.out.status("status", &store.location(), &inventory);
    Ok(0)
}
