#!/usr/bin/env bash
# Regenerates the openssl- and gpgsm-made part of the golden corpus (tests/corpus/*/),
# with the keys in tests/corpus/keys/. Run by hand, never by CI: the committed outputs are
# the golden files; regenerating changes them (fresh randomness), so commit the result.
#
# Public test vectors (tests/corpus/public/) are not made here: see tests/corpus/README.md.
set -euo pipefail
cd "$(dirname "$0")"
K=keys
mkdir -p "$K" openssl gpgsm
tmp=$(mktemp -d); trap 'GNUPGHOME=$tmp/gnupg gpgconf --kill all 2>/dev/null || true; rm -rf "$tmp"' EXIT

# --- keys: a root and two leaves, kept in the repository, valid until 2125 ---------------
if [ ! -f "$K/root.pem" ]; then
  cat > "$tmp/root.cnf" <<CNF
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3
[dn]
CN = Sealgate Corpus Root
[v3]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CNF
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$K/root.key"
  openssl req -x509 -new -config "$tmp/root.cnf" -key "$K/root.key" -sha256 -days 36500 -out "$K/root.pem"
  leaf() { # name keyalg ku
    local name=$1 alg=$2 ku=$3
    case $alg in
      rsa) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$K/$name.key" ;;
      p256) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$K/$name.key" ;;
    esac
    printf '[ext]\nbasicConstraints = critical, CA:false\nkeyUsage = critical, %s\nextendedKeyUsage = emailProtection\nsubjectAltName = email:%s@example.test\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n' "$ku" "$name" > "$tmp/$name.ext"
    openssl req -new -key "$K/$name.key" -subj "/CN=$name/emailAddress=$name@example.test" -out "$tmp/$name.csr"
    openssl x509 -req -in "$tmp/$name.csr" -CA "$K/root.pem" -CAkey "$K/root.key" -set_serial "0x$(openssl rand -hex 8)" \
      -days 36500 -sha256 -extfile "$tmp/$name.ext" -extensions ext -out "$K/$name.pem"
  }
  leaf corpus-rsa rsa "digitalSignature, keyEncipherment"
  leaf corpus-ec p256 "digitalSignature, keyAgreement"
  openssl pkcs12 -export -legacy -inkey "$K/corpus-rsa.key" -in "$K/corpus-rsa.pem" -certfile "$K/root.pem" \
    -passout pass:corpus -out "$K/corpus-rsa-legacy.p12"
fi

entity() { printf 'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGolden corpus message: %s.\r\nZweite Zeile \xc3\xa4\xc3\xb6\xc3\xbc.\r\n' "$1"; }
args() { printf '%s\n' "$2" > "$1.args"; }

# --- openssl: encrypted, bare CMS (expected = the exact plaintext) -----------------------
enc() { # name cipher form keyopts...
  local name=$1 cipher=$2 form=$3; shift 3
  entity "$name" > "openssl/$name.expected"
  local out ext
  case $form in DER) ext=p7m; out=(-outform DER) ;; PEM) ext=pem; out=(-outform PEM) ;; BER) ext=p7m; out=(-stream -outform DER) ;; esac
  openssl cms -encrypt -binary "-$cipher" -in "openssl/$name.expected" "${out[@]}" -out "openssl/$name.$ext" "$@"
  args "openssl/$name" "smime decrypt --key keys/${KEYNAME}.key --cert keys/${KEYNAME}.pem"
}
KEYNAME=corpus-rsa
enc enc-aes256-cbc-rsa-der aes-256-cbc DER -recip $K/corpus-rsa.pem
enc enc-aes128-gcm-rsa-oaep256-der aes-128-gcm DER -recip $K/corpus-rsa.pem -keyopt rsa_padding_mode:oaep -keyopt rsa_oaep_md:sha256
enc enc-des3-rsa-keyid-pem des-ede3-cbc PEM -keyid -recip $K/corpus-rsa.pem
enc enc-aes192-cbc-rsa-ber aes-192-cbc BER -recip $K/corpus-rsa.pem
KEYNAME=corpus-ec
enc enc-aes256-cbc-ec-kdf-sha1-der aes-256-cbc DER -recip $K/corpus-ec.pem
enc enc-aes256-gcm-ec-kdf-sha256-ber aes-256-gcm BER -recip $K/corpus-ec.pem -keyopt ecdh_kdf_md:sha256

# --- openssl: signed, S/MIME messages (expected = the signed entity) ----------------------
sig() { # name from extra...
  local name=$1 from=$2; shift 2
  entity "$name" > "openssl/$name.expected"
  openssl cms -sign -in "openssl/$name.expected" -out "openssl/$name.eml" -from "$from" \
    -to bob@example.test -subject "corpus $name" "$@"
  args "openssl/$name" "smime verify --ca keys/root.pem"
}
sig sign-rsa-sha256-detached corpus-rsa@example.test -md sha256 -signer $K/corpus-rsa.pem -inkey $K/corpus-rsa.key
sig sign-rsa-pss-opaque corpus-rsa@example.test -nodetach -md sha256 -signer $K/corpus-rsa.pem -inkey $K/corpus-rsa.key \
  -keyopt rsa_padding_mode:pss -keyopt rsa_pss_saltlen:max
sig sign-ecdsa-p256-detached corpus-ec@example.test -md sha256 -signer $K/corpus-ec.pem -inkey $K/corpus-ec.key

# --- gpgsm: encrypted and signed, bare BER CMS ---------------------------------------------
export GNUPGHOME=$tmp/gnupg
mkdir -m 700 "$GNUPGHOME"
echo allow-loopback-pinentry > "$GNUPGHOME/gpg-agent.conf"
printf 'disable-crl-checks\ndisable-dirmngr\n' > "$GNUPGHOME/gpgsm.conf"
echo "$(openssl x509 -in $K/root.pem -noout -fingerprint -sha1 | cut -d= -f2) S relax" > "$GNUPGHOME/trustlist.txt"
G=(gpgsm --batch --no-tty --pinentry-mode loopback --passphrase-fd 0)
"${G[@]}" --import $K/root.pem </dev/null
echo corpus | "${G[@]}" --import $K/corpus-rsa-legacy.p12
entity gpgsm-enc-aes256 > gpgsm/enc-aes256.expected
"${G[@]}" --encrypt </dev/null --cipher-algo AES256 -r corpus-rsa@example.test -o gpgsm/enc-aes256.p7m gpgsm/enc-aes256.expected
args gpgsm/enc-aes256 "smime decrypt --key keys/corpus-rsa.key --cert keys/corpus-rsa.pem"
entity gpgsm-sign-opaque > gpgsm/sign-opaque.expected
echo corpus | "${G[@]}" --sign --include-certs -1 -u corpus-rsa@example.test -o gpgsm/sign-opaque.p7m gpgsm/sign-opaque.expected
args gpgsm/sign-opaque "smime verify --ca keys/root.pem"
echo "generated: $(ls openssl gpgsm | wc -l) files"
