// The `'static` twin of `typed_arena_shortens_lifetime`: storing
// `'static` values compiles, so the failing case fails for its lifetime,
// not for a typo.
use ebb_arena::{SlabConfig, TypedArena};

fn store(arena: &TypedArena<&'static str>, s: &'static str) {
    arena.insert(s).unwrap();
}

fn main() {
    let arena: TypedArena<&'static str> = TypedArena::new(SlabConfig::default()).unwrap();
    store(&arena, "static");
    let h = ebb_arena::Handle::<&'static str>::from_bits(1);
    let _same: ebb_arena::Handle<&'static str> = h;
}
