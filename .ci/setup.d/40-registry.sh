# podci-registry tests: a real registry (Debian docker-registry), htpasswd for its Basic
# auth, openssl for the token server's key and certificate, skopeo and umoci for interop,
# and Debian's Docker engine plus busybox-static so one test can `docker run` an appended
# image (the test starts and stops its own private dockerd).
apt_install docker-registry apache2-utils openssl skopeo umoci docker.io busybox-static
