//! Windows customisation of a deployed system partition: the answer file and the first-boot
//! script, merged with what the image already holds (pure), then written through ntfs-3g.

pub mod apply;
pub mod setupcomplete;
pub mod unattend;
