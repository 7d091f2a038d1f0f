//! AFL++ target: [`palisade_fuzz::import_nginx`] on each input.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        palisade_fuzz::import_nginx(data);
    });
}
