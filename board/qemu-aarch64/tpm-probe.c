/* Bring-up probe of the qemu-aarch64 board: the /init of a test initramfs that shows the
 * board's kernel drives QEMU virt's tpm-tis-device. It sends TPM2_GetRandom(8) to /dev/tpm0,
 * prints one line the system test reads, and powers off. Not part of the product image. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <unistd.h>

int main(void) {
    mount("devtmpfs", "/dev", "devtmpfs", 0, 0);
    mount("sysfs", "/sys", "sysfs", 0, 0);
    /* The initramfs has no /dev/console node: open the console once devtmpfs is there. */
    int console = open("/dev/console", O_RDWR);
    if (console >= 0) {
        dup2(console, 1);
        dup2(console, 2);
    }

    char version[16] = "none";
    int fd = open("/sys/class/tpm/tpm0/tpm_version_major", O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, version, sizeof version - 1);
        version[n > 0 ? n : 0] = 0;
        version[strcspn(version, "\n")] = 0;
        close(fd);
    }

    /* TPM2_GetRandom: tag ST_NO_SESSIONS, size 12, TPM_CC_GetRandom, bytesRequested 8. */
    const unsigned char get_random[] = {0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8};
    unsigned char resp[64];
    ssize_t got = -1;
    fd = open("/dev/tpm0", O_RDWR);
    if (fd >= 0) {
        if (write(fd, get_random, sizeof get_random) == (ssize_t)sizeof get_random)
            got = read(fd, resp, sizeof resp);
        close(fd);
    }
    unsigned rc = got >= 10 ? (unsigned)resp[6] << 24 | resp[7] << 16 | resp[8] << 8 | resp[9]
                            : 0xffffffffu;
    printf("tpm-probe: tpm0 version %s; GetRandom answered %zd bytes, response code 0x%08x\n",
           version, got, rc);
    fflush(stdout);
    sync();
    reboot(RB_POWER_OFF);
    return 0;
}
