"""A throwaway CA and a certificate it issued for 127.0.0.1 and localhost (trustme)."""

from __future__ import annotations

from pathlib import Path

import trustme


class Certificates:
    def __init__(self, folder: Path) -> None:
        self.ca = trustme.CA()
        issued = self.ca.issue_cert("127.0.0.1", "localhost")
        self.cert = folder / "gateway.pem"
        self.key = folder / "gateway.key"
        self.ca_file = folder / "ca.pem"
        issued.cert_chain_pems[0].write_to_path(str(self.cert))
        for pem in issued.cert_chain_pems[1:]:
            pem.write_to_path(str(self.cert), append=True)
        issued.private_key_pem.write_to_path(str(self.key))
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.other_ca_file = folder / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(self.other_ca_file))
