//! The rollout engine: canary decisions on model quality, with statistics. Pure: no client, no
//! clock; time and evidence come in as arguments.

pub mod judgement;
pub mod machine;
pub mod weights;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
