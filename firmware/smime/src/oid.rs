//! Object identifiers the engine reads and writes, as DER content bytes.

use const_oid::ObjectIdentifier;

macro_rules! oids {
    ($($(#[$m:meta])* $name:ident = $dotted:literal;)*) => {
        $(
            $(#[$m])*
            pub const $name: &[u8] = ObjectIdentifier::new_unwrap($dotted).as_bytes();
        )*
        /// A readable name for an OID, for reports.
        pub fn name(oid: &[u8]) -> String {
            $( if oid == $name { return stringify!($name).to_ascii_lowercase().replace('_', "-"); } )*
            dotted(oid)
        }
    };
}

oids! {
    // CMS content types.
    /// id-data.
    DATA = "1.2.840.113549.1.7.1";
    /// id-signedData.
    SIGNED_DATA = "1.2.840.113549.1.7.2";
    /// id-envelopedData.
    ENVELOPED_DATA = "1.2.840.113549.1.7.3";
    /// id-ct-authEnvelopedData.
    AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23";
    /// id-ct-compressedData.
    COMPRESSED_DATA = "1.2.840.113549.1.9.16.1.9";
    // Attributes.
    /// contentType attribute.
    ATTR_CONTENT_TYPE = "1.2.840.113549.1.9.3";
    /// messageDigest attribute.
    ATTR_MESSAGE_DIGEST = "1.2.840.113549.1.9.4";
    /// signingTime attribute.
    ATTR_SIGNING_TIME = "1.2.840.113549.1.9.5";
    /// smimeCapabilities attribute.
    ATTR_SMIME_CAPABILITIES = "1.2.840.113549.1.9.15";
    /// id-aa-encrypKeyPref.
    ATTR_ENCRYPT_KEY_PREF = "1.2.840.113549.1.9.16.2.11";
    /// pkcs-9 emailAddress in a subject name.
    EMAIL_ADDRESS = "1.2.840.113549.1.9.1";
    // Key transport and agreement.
    /// rsaEncryption.
    RSA_ENCRYPTION = "1.2.840.113549.1.1.1";
    /// id-RSAES-OAEP.
    RSAES_OAEP = "1.2.840.113549.1.1.7";
    /// id-mgf1.
    MGF1 = "1.2.840.113549.1.1.8";
    /// id-pSpecified.
    P_SPECIFIED = "1.2.840.113549.1.1.9";
    /// id-RSASSA-PSS.
    RSASSA_PSS = "1.2.840.113549.1.1.10";
    /// sha1WithRSAEncryption.
    SHA1_WITH_RSA = "1.2.840.113549.1.1.5";
    /// sha256WithRSAEncryption.
    SHA256_WITH_RSA = "1.2.840.113549.1.1.11";
    /// sha384WithRSAEncryption.
    SHA384_WITH_RSA = "1.2.840.113549.1.1.12";
    /// sha512WithRSAEncryption.
    SHA512_WITH_RSA = "1.2.840.113549.1.1.13";
    /// sha224WithRSAEncryption.
    SHA224_WITH_RSA = "1.2.840.113549.1.1.14";
    /// id-ecPublicKey.
    EC_PUBLIC_KEY = "1.2.840.10045.2.1";
    /// secp256r1 (P-256).
    P256 = "1.2.840.10045.3.1.7";
    /// secp384r1 (P-384).
    P384 = "1.3.132.0.34";
    /// secp521r1 (P-521).
    P521 = "1.3.132.0.35";
    /// id-X25519.
    X25519 = "1.3.101.110";
    /// id-Ed25519.
    ED25519 = "1.3.101.112";
    /// ecdsa-with-SHA1.
    ECDSA_SHA1 = "1.2.840.10045.4.1";
    /// ecdsa-with-SHA224.
    ECDSA_SHA224 = "1.2.840.10045.4.3.1";
    /// ecdsa-with-SHA256.
    ECDSA_SHA256 = "1.2.840.10045.4.3.2";
    /// ecdsa-with-SHA384.
    ECDSA_SHA384 = "1.2.840.10045.4.3.3";
    /// ecdsa-with-SHA512.
    ECDSA_SHA512 = "1.2.840.10045.4.3.4";
    /// dhSinglePass-stdDH-sha1kdf-scheme.
    ECDH_SHA1KDF = "1.3.133.16.840.63.0.2";
    /// dhSinglePass-stdDH-sha224kdf-scheme.
    ECDH_SHA224KDF = "1.3.132.1.11.0";
    /// dhSinglePass-stdDH-sha256kdf-scheme.
    ECDH_SHA256KDF = "1.3.132.1.11.1";
    /// dhSinglePass-stdDH-sha384kdf-scheme.
    ECDH_SHA384KDF = "1.3.132.1.11.2";
    /// dhSinglePass-stdDH-sha512kdf-scheme.
    ECDH_SHA512KDF = "1.3.132.1.11.3";
    /// dhSinglePass-cofactorDH-sha1kdf-scheme.
    ECDH_COFACTOR_SHA1KDF = "1.3.133.16.840.63.0.3";
    /// dhSinglePass-cofactorDH-sha256kdf-scheme.
    ECDH_COFACTOR_SHA256KDF = "1.3.132.1.14.1";
    /// dhSinglePass-cofactorDH-sha384kdf-scheme.
    ECDH_COFACTOR_SHA384KDF = "1.3.132.1.14.2";
    /// id-alg-ESDH (X25519/X448 with HKDF, RFC 8418) is identified by the HKDF scheme OIDs.
    X25519_HKDF_SHA256 = "1.2.840.113549.1.9.16.3.19";
    /// dhSinglePass-stdDH-hkdf-sha384-scheme.
    X25519_HKDF_SHA384 = "1.2.840.113549.1.9.16.3.20";
    /// dhSinglePass-stdDH-hkdf-sha512-scheme.
    X25519_HKDF_SHA512 = "1.2.840.113549.1.9.16.3.21";
    // Key wrap.
    /// id-aes128-wrap.
    AES128_WRAP = "2.16.840.1.101.3.4.1.5";
    /// id-aes192-wrap.
    AES192_WRAP = "2.16.840.1.101.3.4.1.25";
    /// id-aes256-wrap.
    AES256_WRAP = "2.16.840.1.101.3.4.1.45";
    // Content encryption.
    /// aes128-CBC.
    AES128_CBC = "2.16.840.1.101.3.4.1.2";
    /// aes192-CBC.
    AES192_CBC = "2.16.840.1.101.3.4.1.22";
    /// aes256-CBC.
    AES256_CBC = "2.16.840.1.101.3.4.1.42";
    /// aes128-GCM.
    AES128_GCM = "2.16.840.1.101.3.4.1.6";
    /// aes192-GCM.
    AES192_GCM = "2.16.840.1.101.3.4.1.26";
    /// aes256-GCM.
    AES256_GCM = "2.16.840.1.101.3.4.1.46";
    /// des-ede3-cbc.
    DES_EDE3_CBC = "1.2.840.113549.3.7";
    /// rc2-cbc (read only to say it is unsupported).
    RC2_CBC = "1.2.840.113549.3.2";
    /// des-cbc (single DES; unsupported).
    DES_CBC = "1.3.14.3.2.7";
    /// id-alg-AEADChaCha20Poly1305.
    CHACHA20_POLY1305 = "1.2.840.113549.1.9.16.3.18";
    // Digests.
    /// SHA-1.
    SHA1 = "1.3.14.3.2.26";
    /// SHA-224.
    SHA224 = "2.16.840.1.101.3.4.2.4";
    /// SHA-256.
    SHA256 = "2.16.840.1.101.3.4.2.1";
    /// SHA-384.
    SHA384 = "2.16.840.1.101.3.4.2.2";
    /// SHA-512.
    SHA512 = "2.16.840.1.101.3.4.2.3";
    /// MD5 (read only to say it is unsupported).
    MD5 = "1.2.840.113549.2.5";
    // Certificate extensions.
    /// subjectKeyIdentifier.
    EXT_SUBJECT_KEY_ID = "2.5.29.14";
    /// keyUsage.
    EXT_KEY_USAGE = "2.5.29.15";
    /// subjectAltName.
    EXT_SUBJECT_ALT_NAME = "2.5.29.17";
    /// basicConstraints.
    EXT_BASIC_CONSTRAINTS = "2.5.29.19";
    /// extKeyUsage.
    EXT_EXT_KEY_USAGE = "2.5.29.37";
    /// id-kp-emailProtection.
    KP_EMAIL_PROTECTION = "1.3.6.1.5.5.7.3.4";
    /// anyExtendedKeyUsage.
    KP_ANY = "2.5.29.37.0";
    /// commonName.
    COMMON_NAME = "2.5.4.3";
}

/// Dotted-decimal text of an OID's content bytes.
pub fn dotted(oid: &[u8]) -> String {
    match ObjectIdentifier::from_bytes(oid) {
        Ok(o) => o.to_string(),
        Err(_) => "invalid-oid".to_string(),
    }
}
