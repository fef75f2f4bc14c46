// A `Handle<&'static str>` names a record of exactly that type: it must
// not coerce to a `Handle<&'a str>`.
use ebb_arena::Handle;

fn shorten<'a>(h: Handle<&'static str>) -> Handle<&'a str> {
    h
}

fn main() {
    let h = Handle::<&'static str>::from_bits(1);
    let _ = shorten(h);
}
