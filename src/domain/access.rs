//! What a vendor may run besides its own registry's images: the Engine-only images an
//! operator gave it (`ImageGrant`), and its credentials for registries (`RegistryLogin` on
//! the way in, `StoredLogin` as kept: the password sealed).

use serde::Serialize;

use super::{ImageRef, Invalid, RegistryServer, Timestamp, VendorId};

/// The form in which an Engine-only image is given and looked up: the reference as the
/// Engine reads it (`name` and `name:latest` are one image). A registry reference is
/// refused: it is pulled with the vendor's credentials, not given.
pub fn given_image(raw: &str) -> Result<String, Invalid> {
    let image = ImageRef::parse(raw)?;
    if let Some(server) = image.server() {
        return Err(Invalid::new(
            "image",
            format!(
                "{raw} is an image of the registry {server}: it is pulled with the vendor's \
                 credentials for that registry, not given; give an image that is only on \
                 the Docker Engine"
            ),
        ));
    }
    Ok(image.pull_reference())
}

/// An Engine-only image an operator gave a vendor: the vendor may name it in its demos.
/// One image may be given to several vendors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ImageGrant {
    /// As `given_image` spells it.
    pub image: String,
    #[schema(value_type = String, format = Uuid)]
    pub vendor_id: VendorId,
    #[schema(value_type = String, format = DateTime)]
    pub given_at: Timestamp,
}

/// A vendor's login to one registry, as it sends it. The password is never shown, logged
/// or stored in clear: `Debug` leaves it out.
#[derive(Clone)]
pub struct RegistryLogin {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl RegistryLogin {
    pub fn parse(username: String, password: String) -> Result<RegistryLogin, Invalid> {
        if username.is_empty() || username.len() > 255 {
            return Err(Invalid::new("username", "must be 1 to 255 bytes"));
        }
        if password.is_empty() || password.len() > 4096 {
            return Err(Invalid::new("password", "must be 1 to 4096 bytes"));
        }
        Ok(RegistryLogin { username, password })
    }
}

/// A vendor's login to one registry as the store keeps it: the password as the
/// deployment's `SecretBox` sealed it.
#[derive(Clone)]
pub struct StoredLogin {
    pub server: RegistryServer,
    pub username: String,
    pub sealed_password: String,
    pub updated_at: Timestamp,
}

impl std::fmt::Debug for StoredLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredLogin")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_given_as_the_engine_reads_them_and_registry_ones_are_not() {
        assert_eq!(
            given_image("testdrive/csv-explorer:1").unwrap(),
            "testdrive/csv-explorer:1"
        );
        assert_eq!(given_image("busybox").unwrap(), "busybox:latest");
        assert_eq!(given_image("busybox:latest").unwrap(), "busybox:latest");
        for registry in [
            "registry.example.com/a/b:1",
            "127.0.0.1:5000/a",
            "localhost/a",
        ] {
            let refused = given_image(registry).unwrap_err();
            assert_eq!(refused.field, "image");
            assert!(refused.reason.contains("not given"), "{refused}");
        }
        assert_eq!(given_image("Bad Image").unwrap_err().field, "image");
    }

    #[test]
    fn logins_are_bounded_and_never_show_the_password() {
        let login = RegistryLogin::parse("ci".into(), "hunter2-secret".into()).unwrap();
        assert!(!format!("{login:?}").contains("hunter2"));
        assert_eq!(
            RegistryLogin::parse(String::new(), "p".into())
                .unwrap_err()
                .field,
            "username"
        );
        assert_eq!(
            RegistryLogin::parse("u".repeat(256), "p".into())
                .unwrap_err()
                .field,
            "username"
        );
        assert_eq!(
            RegistryLogin::parse("u".into(), String::new())
                .unwrap_err()
                .field,
            "password"
        );
        assert_eq!(
            RegistryLogin::parse("u".into(), "p".repeat(4097))
                .unwrap_err()
                .field,
            "password"
        );
        assert!(RegistryLogin::parse("u".repeat(255), "p".repeat(4096)).is_ok());
    }
}
