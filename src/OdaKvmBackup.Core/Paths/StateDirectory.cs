namespace OdaKvmBackup.Core.Paths;

/// <summary>Where the journal and the per-domain locks live: /var/lib/odakvmbackup, or $ODAKVMBACKUP_STATE_DIR.
/// Its folders are 0700: a journal names every disk and backup of a VM. The one place that decides paths in the state
/// folder (journal, locks, boot-test records and folders, definitions); every other name is decided by
/// <see cref="Paths.BackupNames"/>.</summary>
internal static class StateDirectory
{
    public const string EnvironmentVariable = "ODAKVMBACKUP_STATE_DIR";

    public static string Root => Environment.GetEnvironmentVariable(EnvironmentVariable) is { Length: > 0 } dir ? dir : "/var/lib/odakvmbackup";

    public static string JournalDirectory => Path.Combine(Root, "journal");

    public static string LockDirectory => Path.Combine(Root, "locks");

    /// <summary>Boot tests in flight: a record per throw-away domain (&lt;name&gt;.json) and a folder with its
    /// overlays and console log (&lt;name&gt;/), so that a later Test-KvmBackup cleans up after a killed one.</summary>
    public static string BootTestDirectory => Path.Combine(Root, "boot-tests");

    /// <summary>Names the folder where boot tests put their overlays and console logs instead of
    /// <see cref="BootTestDirectory"/> (the records stay there): a file system with room for what a guest writes
    /// while it boots.</summary>
    public const string BootTestScratchVariable = "ODAKVMBACKUP_BOOT_TEST_DIR";

    /// <summary>Where a boot test's folder (its overlays and console log) goes: $ODAKVMBACKUP_BOOT_TEST_DIR, or
    /// <see cref="BootTestDirectory"/>.</summary>
    public static string BootTestScratchDirectory =>
        Environment.GetEnvironmentVariable(BootTestScratchVariable) is { Length: > 0 } dir ? Path.GetFullPath(dir) : BootTestDirectory;

    /// <summary>Definitions handed to <c>virsh define</c> (a domain's full XML names every disk): 0600 files in this
    /// 0700 folder, each removed once defined.</summary>
    public static string DefinitionDirectory => Path.Combine(Root, "definitions");

    /// <summary>A file name for a domain name: libvirt allows characters that file names should not carry.</summary>
    public static string FileNameFor(string domain) => "d-" + Uri.EscapeDataString(domain);

    public static string JournalPath(string domain) => Path.Combine(JournalDirectory, FileNameFor(domain) + ".json");

    public static string LockPath(string domain) => Path.Combine(LockDirectory, FileNameFor(domain) + ".lock");

    /// <summary>The record of a boot test in flight: &lt;boot-tests&gt;/d-&lt;throw-away domain&gt;.json.</summary>
    public static string BootTestRecordPath(string bootTestDomain) => Path.Combine(BootTestDirectory, FileNameFor(bootTestDomain) + ".json");

    /// <summary>A boot test's own folder (its overlays, definition and console log) in
    /// <see cref="BootTestScratchDirectory"/>: the throw-away domain's name, which holds the set's domain name (from a
    /// manifest): proven to stay inside, <paramref name="whose"/> starts the error.</summary>
    public static string BootTestFolder(string bootTestDomain, string whose) =>
        Paths.FileSystemPaths.JoinInside(BootTestScratchDirectory, bootTestDomain, whose);

    /// <summary>A new file for a definition handed to <c>virsh define</c>: &lt;definitions&gt;/d-&lt;domain&gt;-&lt;32 hex&gt;.xml.</summary>
    public static string NewDefinitionPath(string domain) => Path.Combine(DefinitionDirectory, $"{FileNameFor(domain)}-{Guid.NewGuid():N}.xml");

    /// <summary>The domain a journal file is for, or null for a file that is not a journal.</summary>
    public static string? DomainOfJournal(string path)
    {
        var name = Path.GetFileName(path);
        return name.StartsWith("d-", StringComparison.Ordinal) && name.EndsWith(".json", StringComparison.Ordinal)
            ? Uri.UnescapeDataString(name[2..^5])
            : null;
    }
}
