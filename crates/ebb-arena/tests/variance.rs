//! Variance of the arena's generic types: `TypedArena<T>` and `Handle<T>`
//! are invariant in `T` (a covariant arena would let a `&'static str`
//! arena store a short-lived `&str` through a coerced reference). Each
//! refused coercion has a `'static` twin that must compile, so a failure
//! here is the lifetime error its `.stderr` names, not a typo.

#[test]
#[cfg_attr(miri, ignore = "runs rustc")]
fn generic_types_are_invariant() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/variance/typed_arena_shortens_lifetime.rs");
    t.compile_fail("tests/variance/handle_shortens_lifetime.rs");
    t.pass("tests/variance/typed_arena_static_ok.rs");
}
