//! AFL++ target: [`palisade_fuzz::request_head`] on each input.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        palisade_fuzz::request_head(data);
    });
}
