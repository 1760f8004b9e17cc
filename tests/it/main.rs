mod pxe;
