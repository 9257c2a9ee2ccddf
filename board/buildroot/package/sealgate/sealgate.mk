################################################################################
#
# sealgate
#
################################################################################

# The tarball is `cargo xtask dist-src`'s (target/dist/ of the workspace, copied to
# Buildroot's download folder or served from a local mirror): the workspace plus VENDOR/
# and a .cargo/config.toml that builds from it, so the build never reaches the network.
SEALGATE_VERSION = 0.1.0
SEALGATE_SOURCE = sealgate-$(SEALGATE_VERSION).tar.gz
SEALGATE_SITE = $(BR2_EXTERNAL_SEALGATE_PATH)/../../target/dist
SEALGATE_SITE_METHOD = file
SEALGATE_LICENSE = Apache-2.0
SEALGATE_DEPENDENCIES = tpm2-tss host-pkgconf
# The tarball is vendored already: no second `cargo vendor` at download time.
SEALGATE_DOWNLOAD_POST_PROCESS =

# A workspace: build the three binaries the box runs (as `cargo xtask image` does).
SEALGATE_CARGO_BUILD_OPTS = -p sealgated -p sealctl -p sealgate-console

# `cargo install --path` does not take a virtual workspace manifest: install by hand,
# the same files `cargo xtask image` installs.
define SEALGATE_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(@D)/target/$(RUSTC_TARGET_NAME)/release/sealgated $(TARGET_DIR)/usr/bin/sealgated
	$(INSTALL) -D -m 0755 $(@D)/target/$(RUSTC_TARGET_NAME)/release/sealctl $(TARGET_DIR)/usr/bin/sealctl
	$(INSTALL) -D -m 0755 $(@D)/target/$(RUSTC_TARGET_NAME)/release/sealgate-console $(TARGET_DIR)/usr/bin/sealgate-console
endef

# Buildroot's cargo infrastructure (pkg-cargo.mk): cargo-package.
$(eval $(cargo-package))
