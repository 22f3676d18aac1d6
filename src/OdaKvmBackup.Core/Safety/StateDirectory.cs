namespace OdaKvmBackup.Core.Safety;

/// <summary>Where the journal and the per-domain locks live: /var/lib/odakvmbackup, or $ODAKVMBACKUP_STATE_DIR.</summary>
public static class StateDirectory
{
    public const string EnvironmentVariable = "ODAKVMBACKUP_STATE_DIR";

    public static string Root => Environment.GetEnvironmentVariable(EnvironmentVariable) is { Length: > 0 } dir ? dir : "/var/lib/odakvmbackup";

    public static string JournalDirectory => Path.Combine(Root, "journal");

    public static string LockDirectory => Path.Combine(Root, "locks");

    /// <summary>A file name for a domain name: libvirt allows characters that file names should not carry.</summary>
    public static string FileNameFor(string domain) => "d-" + Uri.EscapeDataString(domain);
}
