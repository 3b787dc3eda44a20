/**
 * @tandem/proto/certificates: the deployment's certificate authority and the revocation
 * list, apart from the package's index so that only `tandem certs` and a worker checking
 * revocations load the X.509 library.
 */
export {
  DEFAULT_CERTIFICATE_DAYS,
  caPaths,
  devicePaths,
  initCertificateAuthority,
  issueDeviceCertificate,
  issueServerCertificate,
  revokeDevice,
  serverPaths,
  type CertificatePaths,
} from "./certificate-authority.ts";
export { RevocationList } from "./revocation-list.ts";
