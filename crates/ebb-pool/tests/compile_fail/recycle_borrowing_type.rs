// An object that borrows cannot be pooled: the pool hands it to a later
// user, after what it borrows may be gone (`Recycle: 'static`).
use ebb_pool::Recycle;

struct Borrowing<'a> {
    keys: Vec<&'a str>,
}

impl<'a> Recycle for Borrowing<'a> {
    fn recycle(&mut self) {
        self.keys.clear();
    }
}

fn main() {}
