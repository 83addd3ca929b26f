//! The example policy of the README ("Writing one"), kept as it is shown
//! there: the tests check the two match, build it and route with it.

#[rustfmt::skip]
mod policy;
