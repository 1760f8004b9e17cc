-- Accounts from the hospital's directory (Active Directory, LDAP): no local password; their
-- DN, role, name and mail are refreshed from the directory at each login. NULL: a local account.
ALTER TABLE users ADD COLUMN directory_dn TEXT;
