-- A tenant's own password for its LDAP configuration's BindDN (the
-- BindPassword extension parameter), sealed with the service's secret key
-- ("enc1:..."); NULL when the configuration binds without one.
ALTER TABLE ldap_configs ADD COLUMN bind_password TEXT;
