//! `certs`: a CA and a serving certificate for the webhook's Service, plus the caBundle.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;
use mount_hints_webhook::certs::{self, CertRequest};
use mount_hints_webhook::Error;

#[derive(Args)]
pub struct CertsArgs {
    #[arg(long, default_value = "mount-hints")]
    service: String,
    #[arg(long, default_value = "mount-hints")]
    namespace: String,
    /// Output directory; an existing ca.crt/ca.key there is reused.
    #[arg(long, default_value = "certs/out")]
    out: PathBuf,
    /// Extra DNS name for the serving certificate (repeatable).
    #[arg(long = "dns")]
    dns: Vec<String>,
    /// IP address for the serving certificate (repeatable), e.g. 127.0.0.1 for a webhook called by URL.
    #[arg(long = "ip")]
    ips: Vec<IpAddr>,
    /// Validity of the serving certificate, in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Validity of a new CA, in days.
    #[arg(long, default_value_t = 3650)]
    ca_days: u32,
    /// Make a new CA even when one exists (the caBundle changes).
    #[arg(long)]
    new_ca: bool,
}

pub fn run(args: &CertsArgs) -> Result<(), Error> {
    let request = CertRequest {
        service: args.service.clone(),
        namespace: args.namespace.clone(),
        extra_dns: args.dns.clone(),
        ips: args.ips.clone(),
        days: args.days,
        ca_days: args.ca_days,
    };
    let ca = if args.new_ca { None } else { certs::existing_ca(&args.out)? };
    let reused = ca.is_some();
    let issued = certs::issue(&request, ca)?;
    certs::write_issued(&args.out, &issued)?;
    let out = args.out.display();
    println!(
        "{} CA, new serving certificate for {}",
        if reused { "kept the" } else { "new" },
        request.dns_names().join(", ")
    );
    println!("  {out}/{} {out}/{}  (serve --tls-cert/--tls-key, or the Secret)", certs::TLS_CERT, certs::TLS_KEY);
    println!("  {out}/{}  (caBundle of the MutatingWebhookConfiguration)", certs::CA_BUNDLE);
    Ok(())
}
