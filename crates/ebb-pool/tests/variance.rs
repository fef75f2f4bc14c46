//! Variance of the object pool's handles, checked by the compiler.
//!
//! `ObjectPool<T>` and `Pooled<T>` store a `T` through shared handles and
//! hand it out again, so they must be invariant in `T`: each file in
//! `compile_fail/` tries one coercion that would let a value be given back
//! as one type and taken out as another, and must be refused with the
//! lifetime error its `.stderr` names. `compile_pass/` is the `'static`
//! twin that must keep compiling (and that the handles stay `Send + Sync`).
//!
//! `BufferPool` and `PooledBuf` are not generic. `TrackedArc<T>` (ebb-leak)
//! is covariant and read-only, like `Arc<T>`: sound, no test here.
//!
//! Regenerate the expected errors with `TRYBUILD=overwrite` and read them:
//! each must name a lifetime error, not a typo.

#[test]
#[cfg_attr(miri, ignore = "trybuild runs rustc")]
fn object_pool_handles_are_invariant_in_t() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
    t.pass("tests/compile_pass/*.rs");
}
