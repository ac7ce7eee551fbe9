//! Images: a content-addressed store of blobs and unpacked layers, image configs and names, and
//! import of OCI image layouts and docker-save archives.

mod digest;
mod store;
mod unpack;

pub use digest::{Digest, HashingReader};
pub use store::{HistoryStep, ImageRecord, ImageStore, ScratchDir};
pub use unpack::{UnpackStats, unpack_layer};
