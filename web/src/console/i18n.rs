//! The console's words in French (the default) and English, and locale formats for dates,
//! numbers and sizes. One table, so a missing translation is a test failure, not a page that
//! shows a key.

use axum::http::header::ACCEPT_LANGUAGE;
use axum::http::HeaderMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Fr,
    En,
}

pub const LANG_COOKIE: &str = "parc_lang";

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::Fr => "fr",
            Lang::En => "en",
        }
    }

    pub fn parse(s: &str) -> Option<Lang> {
        match s.get(..2).map(str::to_ascii_lowercase).as_deref() {
            Some("fr") => Some(Lang::Fr),
            Some("en") => Some(Lang::En),
            _ => None,
        }
    }

    /// The language cookie, else the browser's first known language, else French.
    pub fn from_headers(h: &HeaderMap) -> Lang {
        if let Some(l) = super::session::cookie(h, LANG_COOKIE).and_then(|v| Lang::parse(&v)) {
            return l;
        }
        h.get(ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').find_map(|part| Lang::parse(part.trim())))
            .unwrap_or(Lang::Fr)
    }

    pub fn t(self, key: &str) -> &'static str {
        self.lookup(key).unwrap_or_else(|| {
            tracing::warn!(key, "console: no translation");
            "?"
        })
    }

    pub fn lookup(self, key: &str) -> Option<&'static str> {
        MESSAGES.iter().find(|(k, _, _)| *k == key).map(|(_, fr, en)| match self {
            Lang::Fr => *fr,
            Lang::En => *en,
        })
    }

    /// `1 234 567` in French (narrow no-break space), `1,234,567` in English.
    pub fn num(self, n: u64) -> String {
        let sep = match self {
            Lang::Fr => "\u{202f}",
            Lang::En => ",",
        };
        let digits = n.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push_str(sep);
            }
            out.push(c);
        }
        out
    }

    /// Binary units with one decimal, in the locale's decimal mark and unit names.
    pub fn bytes(self, n: u64) -> String {
        const UNITS_FR: [&str; 5] = ["o", "Kio", "Mio", "Gio", "Tio"];
        const UNITS_EN: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let units = if self == Lang::Fr { UNITS_FR } else { UNITS_EN };
        let mut v = n as f64;
        let mut u = 0;
        while v >= 1024.0 && u < units.len() - 1 {
            v /= 1024.0;
            u += 1;
        }
        let s = if u == 0 { format!("{n}") } else { format!("{v:.1}") };
        let s = if self == Lang::Fr { s.replace('.', ",") } else { s };
        format!("{s}\u{a0}{}", units[u])
    }

    /// A date and time (UTC: the appliance has no time-zone database), `28/11/2026 21:54` or
    /// `2026-11-28 21:54`.
    pub fn datetime(self, ms: i64) -> String {
        let (y, m, d) = crate::ops::civil_from_days(ms.div_euclid(86_400_000));
        let secs = ms.div_euclid(1000).rem_euclid(86_400);
        let (hh, mm) = (secs / 3600, secs % 3600 / 60);
        match self {
            Lang::Fr => format!("{d:02}/{m:02}/{y} {hh:02}:{mm:02}"),
            Lang::En => format!("{y}-{m:02}-{d:02} {hh:02}:{mm:02}"),
        }
    }

    /// A duration in seconds, `1 h 05 min`, `3 min 20 s`, `45 s`.
    pub fn duration(self, secs: u64) -> String {
        let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
        if h > 0 {
            format!("{h}\u{a0}h {m:02}\u{a0}min")
        } else if m > 0 {
            format!("{m}\u{a0}min {s:02}\u{a0}s")
        } else {
            format!("{s}\u{a0}s")
        }
    }
}

/// `2026-11-28T22:00:00Z` (the journal's CSV, `<time datetime>`).
pub fn iso8601(ms: i64) -> String {
    let (y, m, d) = crate::ops::civil_from_days(ms.div_euclid(86_400_000));
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// (key, French, English).
pub const MESSAGES: &[(&str, &str, &str)] = &[
    ("app.title", "parc — console", "parc — console"),
    ("nav.dashboard", "Tableau de bord", "Dashboard"),
    ("nav.machines", "Machines", "Machines"),
    ("nav.departments", "Départements", "Departments"),
    ("nav.images", "Images", "Images"),
    ("nav.tasks", "Tâches", "Tasks"),
    ("nav.journal", "Journal", "Journal"),
    ("nav.users", "Comptes", "Accounts"),
    ("users.created", "Compte créé. Mot de passe provisoire de", "Account created. One-time password of"),
    ("users.once", "Affiché une seule fois : transmettez-le à la personne, qui devra le changer à sa première connexion.", "Shown once only: hand it to the person, who must change it at first login."),
    ("users.role", "Rôle", "Role"),
    ("users.full_name", "Nom complet (auteur des commits git)", "Full name (author of git commits)"),
    ("users.disabled", "désactivé", "disabled"),
    ("users.must_change", "mot de passe provisoire", "one-time password"),
    ("users.add", "Ajouter un compte", "Add an account"),
    ("users.add_btn", "Créer le compte", "Create the account"),
    ("users.reset_done", "Nouveau mot de passe provisoire de", "New one-time password of"),
    ("users.change_role", "Changer", "Change"),
    ("users.disable", "Désactiver", "Disable"),
    ("users.enable", "Réactiver", "Enable"),
    ("users.reset", "Réinitialiser le mot de passe", "Reset the password"),
    ("users.tokens", "Jetons d'API", "API tokens"),
    ("users.token_name", "Usage", "Purpose"),
    ("users.expires", "Expire", "Expires"),
    ("users.last_used", "Dernier usage", "Last used"),
    ("users.revoke", "Révoquer", "Revoke"),
    ("users.revoked", "révoqué", "revoked"),
    ("users.directory", "annuaire", "directory"),
    ("nav.password", "Mot de passe", "Password"),
    ("nav.logout", "Se déconnecter", "Log out"),
    ("role.readonly", "lecture seule", "read-only"),
    ("role.technician", "technicien", "technician"),
    ("role.admin", "administrateur", "administrator"),
    ("login.title", "Connexion", "Log in"),
    ("login.login", "Identifiant", "Login"),
    ("login.password", "Mot de passe", "Password"),
    ("login.submit", "Se connecter", "Log in"),
    ("login.wrong", "Identifiant ou mot de passe incorrect.", "Wrong login or password."),
    (
        "login.throttled",
        "Trop d'échecs de connexion : réessayez dans quelques instants.",
        "Too many failed logins: try again in a moment.",
    ),
    (
        "login.no_role",
        "L'annuaire a accepté votre mot de passe, mais votre compte n'est dans aucun groupe donnant accès à parc : demandez-le à votre administrateur.",
        "The directory accepted your password, but your account is in no group that gives access to parc: ask your administrator.",
    ),
    (
        "login.directory_down",
        "L'annuaire de l'établissement ne répond pas : réessayez dans un moment. Les comptes locaux de parc fonctionnent toujours.",
        "The hospital's directory does not answer: try again in a moment. parc's local accounts still work.",
    ),
    ("login.required", "Champ obligatoire.", "Required."),
    ("password.title", "Changer de mot de passe", "Change password"),
    (
        "password.forced",
        "Votre mot de passe est provisoire : choisissez-en un nouveau pour continuer.",
        "Your password is a temporary one: choose a new one to continue.",
    ),
    ("password.current", "Mot de passe actuel", "Current password"),
    ("password.new", "Nouveau mot de passe (12 caractères au moins)", "New password (at least 12 characters)"),
    ("password.confirm", "Nouveau mot de passe, encore", "New password, again"),
    ("password.submit", "Enregistrer", "Save"),
    ("password.wrong", "Mot de passe actuel incorrect.", "The current password is wrong."),
    ("password.short", "12 caractères au moins.", "At least 12 characters."),
    ("password.mismatch", "Les deux saisies diffèrent.", "The two entries differ."),
    ("password.same", "Choisissez un mot de passe différent de l'actuel.", "Choose a password other than the current one."),
    ("password.done", "Mot de passe changé ; vos autres sessions sont fermées.", "Password changed; your other sessions are closed."),
    ("dash.running", "Déploiements en cours", "Deployments running now"),
    ("dash.none_running", "Aucun déploiement en cours.", "No deployment running."),
    ("dash.today", "Aujourd'hui", "Today"),
    ("dash.installed", "installées", "installed"),
    ("dash.moved", "déplacées", "moved"),
    ("dash.replaced", "remplacées", "replaced"),
    ("dash.failed", "en échec", "failed"),
    ("dash.failures", "Échecs du jour", "Today's failures"),
    ("dash.fleet_department", "Parc par département", "Fleet by department"),
    ("dash.fleet_image", "Parc par version d'image", "Fleet by image version"),
    ("dash.old", "ancienne version", "old version"),
    ("dash.current", "version courante", "current version"),
    ("dash.unknown_image", "image inconnue du magasin", "image not in the store"),
    ("dash.no_image", "pas encore installées par parc", "not installed by parc yet"),
    ("col.machine", "Machine", "Machine"),
    ("col.hostname", "Nom", "Hostname"),
    ("col.mac", "MAC", "MAC"),
    ("col.department", "Département", "Department"),
    ("col.status", "État", "Status"),
    ("col.model", "Modèle", "Model"),
    ("col.location", "Emplacement", "Location"),
    ("col.image", "Image", "Image"),
    ("col.task", "Tâche", "Task"),
    ("col.progress", "Progression", "Progress"),
    ("col.rate", "Débit", "Rate"),
    ("col.eta", "Fin estimée", "ETA"),
    ("col.phase", "Étape", "Phase"),
    ("col.when", "Quand", "When"),
    ("col.who", "Qui", "Who"),
    ("col.what", "Quoi", "What"),
    ("col.kind", "Type", "Kind"),
    ("col.result", "Résultat", "Result"),
    ("col.reason", "Raison", "Reason"),
    ("col.count", "Machines", "Machines"),
    ("col.serial", "N° de série", "Serial"),
    ("col.asset", "N° d'inventaire", "Asset tag"),
    ("col.memory", "Mémoire", "Memory"),
    ("col.firmware", "Démarrage", "Firmware"),
    ("fw.bios", "BIOS (ancien mode)", "BIOS (legacy)"),
    ("fw.sb_on", "UEFI, Secure Boot actif", "UEFI, Secure Boot on"),
    ("fw.sb_off", "UEFI, Secure Boot inactif", "UEFI, Secure Boot off"),
    ("fw.sb_unknown", "UEFI, Secure Boot inconnu", "UEFI, Secure Boot unknown"),
    ("col.ip", "Adresse IP", "IP address"),
    ("col.last_seen", "Vu pour la dernière fois", "Last seen"),
    ("col.disks", "Disques", "Disks"),
    ("col.notes", "Notes", "Notes"),
    ("col.commit", "Commit", "Commit"),
    ("col.author", "Auteur", "Author"),
    ("col.message", "Message", "Message"),
    ("col.name", "Nom", "Name"),
    ("col.digest", "Empreinte", "Digest"),
    ("col.version", "Version", "Version"),
    ("col.raw", "Disque", "Disk"),
    ("col.used", "Utilisé", "Used"),
    ("col.compressed", "Compressé", "Compressed"),
    ("col.chunks", "Blocs", "Chunks"),
    ("img.shared", "blocs partagés avec d'autres images du magasin", "chunks shared with other images of the store"),
    ("img.shared_short", "partagés", "shared"),
    ("col.created", "Créée", "Created"),
    ("col.source", "Source", "Source"),
    ("col.departments", "Départements", "Departments"),
    ("col.pattern", "Modèle de nom", "Hostname pattern"),
    ("col.file", "Fichier", "File"),
    ("col.line", "Ligne", "Line"),
    ("col.op", "Opération", "Operation"),
    ("col.by", "Par", "By"),
    ("add.title", "Ajouter une machine à l'inventaire", "Add a machine to the inventory"),
    ("add.hostname_auto", "selon le modèle du département", "from the department's pattern"),
    ("add.install", "Installer dès son prochain démarrage réseau", "Install at its next network boot"),
    ("add.submit", "Ajouter", "Add"),
    ("search.label", "Rechercher", "Search"),
    ("search.q", "MAC, nom, n° de série, d'inventaire, lieu, modèle", "MAC, hostname, serial, asset tag, location, model"),
    ("search.submit", "Filtrer", "Filter"),
    ("search.reset", "Tout afficher", "Show all"),
    ("search.any", "— tous —", "— any —"),
    ("search.results", "machines trouvées", "machines found"),
    ("page.prev", "← Précédentes", "← Previous"),
    ("page.next", "Suivantes →", "Next →"),
    ("page.of", "sur", "of"),
    ("machine.hardware", "Matériel", "Hardware"),
    ("machine.inventory", "Inventaire", "Inventory"),
    ("machine.tasks", "Historique des tâches", "Task history"),
    ("machine.journal", "Journal de la machine", "Machine journal"),
    ("machine.git", "Historique git de sa ligne d'inventaire", "Git history of its inventory line"),
    ("machine.actions", "Actions", "Actions"),
    ("machine.no_hw", "Aucun agent n'a encore décrit ce matériel.", "No agent has reported this hardware yet."),
    ("machine.not_in_inventory", "Machine découverte, absente de l'inventaire.", "Discovered machine, not in the inventory."),
    ("action.reason", "Motif (journal et commit git)", "Reason (journal and git commit)"),
    ("action.edit", "Modifier l'inventaire", "Edit the inventory"),
    ("action.edit_btn", "Enregistrer", "Save"),
    ("action.install", "Installer dans un département", "Install into a department"),
    ("action.install_btn", "Ajouter et installer", "Add and install"),
    ("action.reimage", "Réinstaller", "Reimage"),
    ("action.reimage_help", "Réécrit l'image du département sur cette machine.", "Writes the department's image to this machine again."),
    ("action.reimage_btn", "Réinstaller", "Reimage"),
    ("action.move", "Changer de département", "Move to department"),
    ("action.move_btn", "Déplacer", "Move"),
    ("action.replace", "Remplacer par une nouvelle machine", "Replace by a new machine"),
    ("action.replace_with", "MAC de la nouvelle machine", "MAC of the new machine"),
    ("action.replace_asset", "N° d'inventaire de la nouvelle machine", "Asset tag of the new machine"),
    ("action.replace_btn", "Remplacer", "Replace"),
    ("action.retire", "Retirer du parc", "Retire"),
    ("action.retire_help", "La machine reste dans l'historique, marquée retirée.", "The machine stays in the history, marked retired."),
    ("action.retire_btn", "Retirer", "Retire"),
    ("action.cancel_btn", "Annuler la tâche", "Cancel the task"),
    ("action.wol", "Réveil réseau (Wake-on-LAN)", "Wake-on-LAN"),
    ("action.wol_help", "Allume la machine par le réseau (si son BIOS/UEFI l'autorise).", "Powers the machine on over the network (if its firmware allows it)."),
    ("action.wol_btn", "Réveiller", "Wake"),
    ("action.readonly", "Votre rôle (lecture seule) ne permet pas d'agir sur les machines.", "Your role (read-only) cannot act on machines."),
    ("action.department", "Département", "Department"),
    ("dep.problems", "Problèmes du dépôt de profils", "Profiles repository problems"),
    ("dep.no_problems", "Tous les fichiers sont valides.", "Every file validates."),
    ("dep.stale", "ne valide pas à HEAD : la dernière version valide reste en service", "does not validate at HEAD: the last good version keeps serving"),
    ("dep.machines", "machines", "machines"),
    ("dep.disk", "Choix du disque", "Disk choice"),
    ("dep.payloads", "Fichiers déposés", "Payload"),
    ("dep.first_boot", "Script au premier démarrage", "First-boot script"),
    ("dep.system", "Système", "System"),
    ("dep.domain", "jonction au domaine dans", "joins the domain in"),
    ("dep.no_grow", "taille de l'image gardée sur un disque plus grand", "image size kept on a larger disk"),
    ("dep.not_in_store", "absente du magasin", "not in the store"),
    ("dep.commit", "Commit des profils", "Profiles commit"),
    ("img.verify", "Vérifier", "Verify"),
    ("img.none", "Aucune image dans le magasin. Capturez-en une : parc image capture DISQUE --name NOM", "No image in the store. Capture one: parc image capture DISK --name NAME"),
    ("img.machines_on", "machines sur cette version", "machines on this version"),
    ("img.unreadable", "manifeste illisible", "unreadable manifest"),
    ("tasks.campaigns", "Campagnes récentes", "Recent campaigns"),
    ("tasks.campaign", "Campagne", "Campaign"),
    ("tasks.campaign_machines", "Machines de la campagne", "Machines of the campaign"),
    ("tasks.took", "Durée", "Took"),
    ("tasks.all", "Toutes les tâches", "All tasks"),
    ("tasks.active", "En cours et en attente", "Running and queued"),
    ("tasks.none_active", "Aucune tâche en cours.", "No task running or queued."),
    ("tasks.finished", "Terminées récemment", "Recently finished"),
    ("tasks.bulk", "Opération groupée (CSV)", "Bulk operation (CSV)"),
    (
        "tasks.bulk_help",
        "Une ligne par machine, avec une ligne d'en-tête. install : machine[,department] — move : machine,department — replace : machine,with[,asset_tag].",
        "One line per machine, with a header row. install: machine[,department] — move: machine,department — replace: machine,with[,asset_tag].",
    ),
    ("tasks.bulk_op", "Opération", "Operation"),
    ("tasks.bulk_csv", "CSV", "CSV"),
    ("tasks.bulk_file", "ou un fichier CSV", "or a CSV file"),
    ("tasks.preview_btn", "Prévisualiser", "Preview"),
    ("tasks.preview", "Prévisualisation : rien n'est encore fait", "Preview: nothing has been done yet"),
    ("tasks.possible", "Possibles :", "Possible:"),
    ("tasks.refused", "refusées :", "refused:"),
    ("tasks.confirm_btn", "Confirmer et lancer", "Confirm and run"),
    ("tasks.result", "Résultat de l'opération groupée", "Bulk operation result"),
    ("tasks.commit", "commit d'inventaire", "inventory commit"),
    ("tasks.nothing", "Aucune opération n'a pu être faite.", "No operation could be done."),
    ("journal.filter_actor", "Qui (identifiant, agent, parc)", "Who (login, agent, parc)"),
    ("journal.filter_kind", "Type (préfixe : machine., task., agent., login.)", "Kind (prefix: machine., task., agent., login.)"),
    ("journal.filter_machine", "Machine (MAC ou nom)", "Machine (MAC or hostname)"),
    ("journal.from", "Du (jour UTC)", "From (UTC day)"),
    ("journal.to", "Au (inclus)", "To (included)"),
    ("journal.bad_date", "Date attendue : AAAA-MM-JJ.", "Expected a date: YYYY-MM-DD."),
    ("journal.export", "Exporter en CSV", "Export as CSV"),
    ("journal.empty", "Aucune entrée.", "No entry."),
    ("journal.older", "Plus anciennes →", "Older →"),
    ("status.new", "nouvelle", "new"),
    ("status.discovered", "découverte", "discovered"),
    ("status.queued", "en attente", "queued"),
    ("status.installing", "installation", "installing"),
    ("status.capturing", "capture", "capturing"),
    ("status.installed", "installée", "installed"),
    ("status.ready", "prête", "ready"),
    ("status.failed", "échec", "failed"),
    ("status.retired", "retirée", "retired"),
    ("status.running", "en cours", "running"),
    ("status.done", "terminée", "done"),
    ("status.cancelled", "annulée", "cancelled"),
    ("kind.install", "installation", "install"),
    ("kind.move", "déplacement", "move"),
    ("kind.replace", "remplacement", "replace"),
    ("kind.reimage", "réinstallation", "reimage"),
    ("kind.capture", "capture", "capture"),
    ("kind.retire", "retrait", "retire"),
    ("kind.ok", "possible", "possible"),
    ("kind.accepted", "acceptée", "accepted"),
    ("kind.refused", "refusée", "refused"),
    ("error.title", "Erreur", "Error"),
    ("error.csrf", "Ce formulaire a expiré ou ne vient pas de parc (jeton de sécurité absent ou faux). Rechargez la page et recommencez.", "This form has expired or did not come from parc (missing or wrong security token). Reload the page and submit it again."),
    ("form.errors", "Corrigez les champs signalés.", "Correct the fields marked below."),
    ("time.utc", "heures UTC", "times in UTC"),
    ("time.local", "heures locales", "local times"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header::COOKIE;

    #[test]
    fn every_key_used_by_a_template_or_the_code_is_translated() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut sources = Vec::new();
        for sub in ["templates", "src/console", "src/console/pages"] {
            for e in std::fs::read_dir(dir.join(sub)).unwrap() {
                let p = e.unwrap().path();
                if p.is_file() {
                    sources.push(std::fs::read_to_string(p).unwrap());
                }
            }
        }
        let mut missing = Vec::new();
        for text in &sources {
            for part in text.split("t(\"").skip(1) {
                let key = part.split('"').next().unwrap();
                if key.contains('.') && !MESSAGES.iter().any(|(k, _, _)| *k == key) {
                    missing.push(key.to_string());
                }
            }
        }
        assert!(missing.is_empty(), "keys without a translation: {missing:?}");
        let mut keys: Vec<&str> = MESSAGES.iter().map(|m| m.0).collect();
        keys.sort();
        let n = keys.len();
        keys.dedup();
        assert_eq!(n, keys.len(), "a key appears twice");
    }

    #[test]
    fn locale_formats() {
        assert_eq!(Lang::Fr.num(10_000), "10\u{202f}000");
        assert_eq!(Lang::En.num(1_234_567), "1,234,567");
        assert_eq!(Lang::En.num(999), "999");
        assert_eq!(Lang::Fr.bytes(1536 << 20), "1,5\u{a0}Gio");
        assert_eq!(Lang::En.bytes(512), "512\u{a0}B");
        assert_eq!(Lang::Fr.datetime(1_795_903_200_000), "28/11/2026 22:00");
        assert_eq!(Lang::En.datetime(1_795_903_200_000), "2026-11-28 22:00");
        assert_eq!(Lang::En.duration(3725), "1\u{a0}h 02\u{a0}min");
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_LANGUAGE, "de-DE,en-GB;q=0.8,fr;q=0.5".parse().unwrap());
        assert_eq!(Lang::from_headers(&h), Lang::En);
        h.insert(COOKIE, "x=1; parc_lang=fr".parse().unwrap());
        assert_eq!(Lang::from_headers(&h), Lang::Fr);
        assert_eq!(Lang::from_headers(&HeaderMap::new()), Lang::Fr);
    }
}
