-- How each machine booted the agent (UEFI or BIOS, Secure Boot state), as its hello said: JSON.
ALTER TABLE machines ADD COLUMN firmware TEXT;
