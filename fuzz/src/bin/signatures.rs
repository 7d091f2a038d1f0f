//! AFL++ target: [`palisade_fuzz::signatures`] on each input.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        palisade_fuzz::signatures(data);
    });
}
