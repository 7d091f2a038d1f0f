//! AFL++ target: [`palisade_fuzz::capture_lines`] on each input.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        palisade_fuzz::capture_lines(data);
    });
}
