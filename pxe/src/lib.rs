//! parc-pxe: network boot (DHCP and ProxyDHCP, TFTP, the boot decision). Being built (issue 3).
