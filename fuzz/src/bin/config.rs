//! AFL++ target: [`palisade_fuzz::config`] on each input.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        palisade_fuzz::config(data);
    });
}
