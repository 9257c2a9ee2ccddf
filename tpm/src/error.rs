//! Errors of this crate. No variant ever carries secret bytes.

use std::fmt;

/// Everything that can go wrong talking to the TPM.
///
/// tss-esapi's own error type does not leak out of this crate: a TPM failure is reported as
/// [`TpmError::Tpm`] with the raw response code, so that callers need not link tss-esapi.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TpmError {
    /// The TCTI string is not one this crate accepts.
    InvalidTcti {
        /// The TCTI string as given.
        tcti: String,
        /// Why it was refused.
        reason: String,
    },
    /// The TCTI string was fine but no TPM answers there.
    Unreachable {
        /// The TCTI string as given.
        tcti: String,
        /// What failed.
        reason: String,
    },
    /// The PCR policy of a sealed blob is not satisfied: the measured state of this box changed
    /// since the vault was sealed. No secret was returned.
    PolicyMismatch,
    /// The sealed blob cannot be loaded under this TPM's storage key: it was sealed by another
    /// TPM, or this TPM's storage hierarchy was cleared since.
    ForeignBlob {
        /// The TPM's answer.
        detail: String,
    },
    /// The blob needs the box's erase secret (a TPM NV index) and the secret is gone: the box
    /// was wiped (factory reset, tier 2) since the blob was sealed. No secret was returned.
    Erased,
    /// A sealed blob's bytes are malformed or of an unknown version.
    BadBlob(String),
    /// A PCR selection or a list of PCR values is invalid.
    InvalidPcrs(String),
    /// A TPM command failed.
    Tpm {
        /// The operation that failed (e.g. "create sealed object").
        op: &'static str,
        /// The raw TSS2 response code, when there is one.
        code: Option<u32>,
        /// The TSS library's description of the failure.
        detail: String,
    },
}

impl fmt::Display for TpmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TpmError::InvalidTcti { tcti, reason } => write!(
                f,
                "invalid TPM TCTI {tcti:?}: {reason} (accepted: device:/dev/tpmrm0, \
                 swtpm:path=SOCKET, swtpm:host=HOST,port=PORT)"
            ),
            TpmError::Unreachable { tcti, reason } => {
                write!(f, "cannot reach a TPM at {tcti:?}: {reason}")
            }
            TpmError::PolicyMismatch => f.write_str(
                "PCR policy mismatch: the measured state of this box changed since the vault \
                 was sealed (boot chain, firmware or Secure Boot settings differ); unlock the \
                 vault with its recovery secret and re-seal it",
            ),
            TpmError::ForeignBlob { detail } => write!(
                f,
                "sealed vault key cannot be loaded by this TPM: it was sealed by another TPM \
                 or this TPM was cleared since ({detail}); use the recovery secret"
            ),
            TpmError::Erased => f.write_str(
                "the TPM's erase secret for this sealed key is gone: the box was wiped \
                 (factory reset) since the vault was sealed; only the recovery secret opens it",
            ),
            TpmError::BadBlob(why) => write!(f, "malformed sealed blob: {why}"),
            TpmError::InvalidPcrs(why) => write!(f, "invalid PCR selection or values: {why}"),
            TpmError::Tpm { op, code, detail } => match code {
                Some(code) => write!(f, "TPM {op} failed: {detail} (TSS2_RC {code:#x})"),
                None => write!(f, "TPM {op} failed: {detail}"),
            },
        }
    }
}

impl std::error::Error for TpmError {}

/// The raw TSS2 response code of a tss-esapi error, when it has one.
///
/// tss-esapi 7.7 keeps the raw value private, but its per-format `Display` prints it as
/// `Response code value: 0x...`.
pub(crate) fn raw_rc(e: &tss_esapi::Error) -> Option<u32> {
    use tss_esapi::constants::response_code::Tss2ResponseCode;
    let text = match e {
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatZero(rc)) => rc.to_string(),
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatOne(rc)) => rc.to_string(),
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::Success) => return Some(0),
        tss_esapi::Error::WrapperError(_) => return None,
    };
    let hex = text.rsplit("0x").next()?;
    u32::from_str_radix(hex.trim(), 16).ok()
}

/// Response codes this crate reacts to. All are TPM-layer codes (layer bits 0).
pub(crate) mod rc {
    /// TPM_RC_INITIALIZE: TPM2_Startup not yet sent.
    pub const INITIALIZE: u32 = 0x100;
    /// TPM_RC_YIELDED (warning).
    pub const YIELDED: u32 = 0x908;
    /// TPM_RC_TESTING (warning).
    pub const TESTING: u32 = 0x90A;
    /// TPM_RC_LOCKOUT (warning).
    #[cfg_attr(not(feature = "test-support"), allow(dead_code))]
    pub const LOCKOUT: u32 = 0x921;
    /// TPM_RC_RETRY (warning).
    pub const RETRY: u32 = 0x922;
    /// TPM_RC_PCR_CHANGED (warning): PCRs changed since the policy session checked them.
    pub const PCR_CHANGED: u32 = 0x928;
    /// TPM_RC_POLICY_FAIL, format one (error number 0x1D).
    pub const FMT1_POLICY_FAIL: u32 = 0x01D;
    /// TPM_RC_BAD_AUTH, format one (error number 0x22).
    #[cfg_attr(not(feature = "test-support"), allow(dead_code))]
    pub const FMT1_BAD_AUTH: u32 = 0x022;
    /// TPM_RC_AUTH_FAIL, format one (error number 0x0E).
    #[cfg_attr(not(feature = "test-support"), allow(dead_code))]
    pub const FMT1_AUTH_FAIL: u32 = 0x00E;

    /// Whether `code` comes from the TPM itself (not from a TSS layer).
    pub fn is_tpm_layer(code: u32) -> bool {
        code >> 16 == 0
    }

    /// A format-zero TPM code compared without the layer (the TPM layer is 0).
    pub fn is_fmt0(code: u32, want: u32) -> bool {
        is_tpm_layer(code) && code & 0x80 == 0 && code & 0xFFF == want
    }

    /// A format-one TPM code compared by error number only (ignoring handle/session/parameter).
    pub fn is_fmt1(code: u32, error_number: u32) -> bool {
        is_tpm_layer(code) && code & 0x80 != 0 && code & 0x3F == error_number
    }

    /// Codes after which the same command is simply sent again.
    pub fn is_transient(code: u32) -> bool {
        is_fmt0(code, RETRY) || is_fmt0(code, YIELDED) || is_fmt0(code, TESTING)
    }
}

/// Wraps a tss-esapi error as [`TpmError::Tpm`].
pub(crate) fn tpm_err(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |e| TpmError::Tpm {
        op,
        code: raw_rc(&e),
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::rc::*;

    #[test]
    fn classifies_codes() {
        assert!(is_transient(0x922));
        assert!(is_transient(0x90A));
        assert!(is_transient(0x908));
        assert!(
            !is_transient(0x0007_0922),
            "ESYS-layer code is not the TPM's RC_RETRY"
        );
        // TPM_RC_POLICY_FAIL for session 1: RC_FMT1 | RC_S | RC_1 | 0x1D = 0x99D.
        assert!(is_fmt1(0x99D, FMT1_POLICY_FAIL));
        assert!(!is_fmt1(0x99D, FMT1_BAD_AUTH));
        assert!(is_fmt1(0x9A2, FMT1_BAD_AUTH));
        assert!(is_fmt0(0x928, PCR_CHANGED));
    }
}
