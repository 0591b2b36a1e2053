//! The broker user and password: from the environment, the systemd credential or the password
//! file (see [`BrokerConfig::password_source`]); never printed.

use crate::config::broker::{self, BrokerConfig};

use super::PublishError;

/// User and password; never printed.
#[derive(Clone)]
pub struct Credentials {
    pub(super) user: String,
    pub(super) password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, password: \"***\" }}",
            self.user
        )
    }
}

/// The user (`IEMD_AMQP_USER`, else `broker.user`) and the password from its source
/// ([`BrokerConfig::password_source`]: `IEMD_AMQP_PASSWORD`, the systemd credential, the password
/// file), else RabbitMQ's default guest/guest when neither is set.
pub fn credentials(config: &BrokerConfig) -> Result<Credentials, PublishError> {
    let user = config.user_name();
    let Some(source) = config.password_source() else {
        return match user {
            Some(user) => Err(PublishError::Credentials(format!(
                "broker user {user:?} has no password: set broker.password_file, the systemd \
                 credential {} or {}",
                broker::CREDENTIAL,
                broker::PASSWORD_ENV
            ))),
            None => Ok(Credentials {
                user: "guest".into(),
                password: "guest".into(),
            }),
        };
    };
    let password = broker::read_password(&source).map_err(PublishError::Credentials)?;
    let user = user.ok_or_else(|| {
        PublishError::Credentials(format!(
            "{source} holds a password but there is no user: set broker.user or {}",
            broker::USER_ENV
        ))
    })?;
    Ok(Credentials { user, password })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = Credentials {
            user: "u".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
