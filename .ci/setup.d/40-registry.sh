# podci-registry tests: a real registry (Debian docker-registry), htpasswd for its Basic
# auth, openssl for the token server's key and certificate, skopeo and umoci for interop.
apt_install docker-registry apache2-utils openssl skopeo umoci
