using System.Globalization;

namespace OdaKvmBackup.Core.Paths;

/// <summary>
/// The one place that decides file and folder names and the paths built from them: overlays, the snapshot name's
/// rule, backup sets and their files, retention folders and retained or repaired overlays, partial copies, files kept
/// aside, and the files of a restore or a boot test. Every name a run uses is decided here once, at its start, for all
/// its disks together, so that two disks can never be given the same name anywhere. Paths in the state folder
/// (journal, locks, boot-test records, definitions) are decided by <see cref="Paths.StateDirectory"/>; names that
/// came from a store are joined through <see cref="FileSystemPaths.JoinInside"/>, which proves they stay inside.
/// A unit test (PathAuthorityTests) fails on a path built by hand anywhere else in src/.
/// </summary>
internal static class BackupNames
{
    public const string DefaultSnapshotName = "FILE_STAGE_BACKUP.TEMP";
    public const string ManifestFileName = "backup.json";
    public const string DomainXmlFileName = "domain.xml";
    public const string PartialSuffix = ".partial";

    /// <summary>
    /// The rule for a snapshot name, for every cmdlet that takes one (New-KvmDiskSnapshot, Repair-KvmBackup): it
    /// becomes part of every overlay's file name, which Repair-KvmBackup moves and deletes, so it must stay one plain
    /// name (no '/'), must not read as an option or a hidden file, and must fit in a --diskspec (no ',' nor blanks).
    /// </summary>
    /// <exception cref="BackupException">InvalidSnapshotName, naming the name and what to use instead.</exception>
    public static void RequireValidSnapshotName(string name)
    {
        if (string.IsNullOrEmpty(name) || name.Contains('/') || name.Contains(',') || name.StartsWith('.') || name.StartsWith('-') || name.Any(char.IsWhiteSpace))
        {
            throw new BackupException(ErrorIds.InvalidSnapshotName, BackupErrorCategory.InvalidArgument,
                $"The snapshot name '{name}' cannot be used: it becomes part of the overlay file names.",
                "Use letters, digits, '.', '_' and '-', not starting with '.' or '-'.", name);
        }
    }

    /// <summary>A run's id: the snapshot time in UTC, to the second; it names the run's set and retention folders.</summary>
    public static string RunId(DateTime utc) => utc.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture);

    /// <summary>
    /// Beside the disk, named as libvirt would (source minus its last extension, '.', snapshot name:
    /// /x/linux_boot -> /x/linux_boot.FILE_STAGE_BACKUP.TEMP, /x/a.qcow2 -> /x/a.FILE_STAGE_BACKUP.TEMP); in an
    /// overlay folder, prefixed with the domain name, since disks of several domains share one folder there.
    /// </summary>
    public static string OverlayPath(string domain, string source, string snapshotName, string? overlayDirectory)
    {
        var stem = Path.GetFileNameWithoutExtension(source);
        return overlayDirectory is null
            ? Path.Combine(Path.GetDirectoryName(source) ?? "/", stem + "." + snapshotName)
            : Path.Combine(overlayDirectory, domain + "." + stem + "." + snapshotName);
    }

    /// <summary>
    /// The overlay of each disk of a run (see <see cref="OverlayPath"/>). Two disks that would get the same overlay
    /// (files that differ only in extension, or the same file name in two folders sharing an overlay folder) get
    /// their target in the name instead: /x/a.vdb.FILE_STAGE_BACKUP.TEMP.
    /// </summary>
    public static IReadOnlyDictionary<string, string> OverlayPaths(string domain, IEnumerable<(string Target, string Source)> disks,
        string snapshotName, string? overlayDirectory)
    {
        var list = disks.ToList();
        var paths = list.ToDictionary(d => d.Target, d => OverlayPath(domain, d.Source, snapshotName, overlayDirectory), StringComparer.Ordinal);
        var shared = paths.GroupBy(p => p.Value, StringComparer.Ordinal).Where(g => g.Count() > 1).SelectMany(g => g.Select(p => p.Key)).ToList();
        foreach (var target in shared)
        {
            var source = list.First(d => d.Target == target).Source;
            var stem = target + "." + Path.GetFileNameWithoutExtension(source);
            paths[target] = overlayDirectory is null
                ? Path.Combine(Path.GetDirectoryName(source) ?? "/", Path.GetFileNameWithoutExtension(source) + "." + target + "." + snapshotName)
                : Path.Combine(overlayDirectory, domain + "." + stem + "." + snapshotName);
        }
        return paths;
    }

    /// <summary>True for a file named as an overlay with that snapshot name. A name proves nothing about who made
    /// it (the manual procedure uses the same one): only the journal does.</summary>
    public static bool LooksLikeOverlay(string path, string snapshotName) =>
        Path.GetFileName(path).EndsWith("." + snapshotName, StringComparison.Ordinal);

    /// <summary>A run's backup set, relative to the destination: &lt;domain&gt;/&lt;run&gt;.</summary>
    public static string SetFolder(string domain, string runId) => domain + "/" + runId;

    /// <summary>A file of a set, relative to the store: &lt;set&gt;/&lt;name&gt;. The name may come from a manifest or a
    /// store's listing: it is proven to stay inside the set (BackupSetUnreadable otherwise, naming
    /// <paramref name="setLocation"/>, or the set folder when it is not given).</summary>
    public static string FileInSet(string setFolder, string fileName, string? setLocation = null) =>
        FileSystemPaths.JoinInside(setFolder, fileName, $"The set {setLocation ?? setFolder}");

    /// <summary>The set's manifest: &lt;set&gt;/backup.json.</summary>
    public static string ManifestPath(string setFolder) => FileInSet(setFolder, ManifestFileName);

    /// <summary>The domain's definition as it was backed up: &lt;set&gt;/domain.xml.</summary>
    public static string DomainXmlPath(string setFolder) => FileInSet(setFolder, DomainXmlFileName);

    /// <summary>The block digest list of a copy in a set: the copy's file name plus <see cref="DigestListSuffix"/>.
    /// Always derived from the copy's name, never read from a manifest.</summary>
    public static string DigestListInSet(string setFolder, string fileName) => FileInSet(setFolder, fileName + DigestListSuffix);

    public const string DigestListSuffix = ".digests";

    /// <summary>A copy in the set while it is written and not yet verified: &lt;set&gt;/&lt;file&gt;.partial.</summary>
    public static string PartialInSet(string setFolder, string fileName) => FileInSet(setFolder, Partial(fileName));

    /// <summary>Where Copy-VmDisk -Force keeps a set it would otherwise have written over.</summary>
    public static string ReplacedSetFolder(string setFolder, DateTime utc) => setFolder + ".replaced-" + RunId(utc);

    /// <summary>A run's retention folder, relative to the retention path: &lt;domain&gt;/&lt;run&gt;.</summary>
    public static string RetentionFolder(string domain, string runId) => domain + "/" + runId;

    /// <summary>The folder Repair-KvmBackup keeps an overlay in when no run recorded it.</summary>
    public static string RepairFolder(string domain, DateTime utc) => domain + "/repaired-" + RunId(utc);

    /// <summary>A retention folder on the host: &lt;RetentionPath&gt;/&lt;domain&gt;/&lt;run&gt; (or .../repaired-&lt;time&gt;),
    /// from a folder given by <see cref="RetentionFolder"/> or <see cref="RepairFolder"/>.</summary>
    public static string RetentionFolderPath(string retentionPath, string retentionFolder) =>
        Path.Combine(retentionPath, retentionFolder.Replace('/', Path.DirectorySeparatorChar));

    /// <summary>Where an overlay is kept: &lt;RetentionPath&gt;/&lt;domain&gt;/&lt;run&gt;/&lt;retained name&gt;; the same path
    /// for Move-OverlayToRetention, Repair-KvmBackup and the move itself.</summary>
    public static string RetainedPath(string retentionPath, string retentionFolder, string retainedName) =>
        Path.Combine(RetentionFolderPath(retentionPath, retentionFolder), retainedName);

    /// <summary>Each disk's file name in the set: its own file name, or, when two disks of the run share one (the
    /// same name in different folders), the target in front: vdb-disk.</summary>
    public static IReadOnlyDictionary<string, string> SetFileNames(IEnumerable<(string Target, string Source)> disks) =>
        UniqueNames(disks.Select(d => (d.Target, Path.GetFileName(d.Source))), inSet: true);

    /// <summary>Each overlay's file name in the retention folder, made unique in the same way.</summary>
    public static IReadOnlyDictionary<string, string> RetainedNames(IEnumerable<(string Target, string Overlay)> disks) =>
        UniqueNames(disks.Select(d => (d.Target, Path.GetFileName(d.Overlay))));

    /// <summary>The name a copy has while it is written and not yet verified.</summary>
    public static string Partial(string fileName) => fileName + PartialSuffix;

    /// <summary>A file name that nothing can have planted in advance, for write probes.</summary>
    public static string ProbeFileName() => $".odakvmbackup-probe-{Guid.NewGuid():N}";

    /// <summary>The file a host file is written to before it replaces it in one rename: hidden, beside it, new each
    /// time (.&lt;name&gt;.&lt;8 hex&gt;.tmp).</summary>
    public static string AtomicWriteTemp(string path) =>
        Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, "." + Path.GetFileName(path) + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp");

    /// <summary>A file name that nothing can have planted in advance, for the write check of an SSH store's folder.</summary>
    public static string StoreProbeFileName() => $".odakvm-write-check-{System.Security.Cryptography.RandomNumberGenerator.GetHexString(16, lowercase: true)}";

    /// <summary>The name a small file of an SSH store is written under before it is renamed over its own name:
    /// hidden, in the same folder, new each time (.&lt;name&gt;.tmp-&lt;8 hex&gt;).</summary>
    public static string StoreTempName(string fileName) =>
        $".{fileName}.tmp-{System.Security.Cryptography.RandomNumberGenerator.GetHexString(8, lowercase: true)}";

    private static Dictionary<string, string> UniqueNames(IEnumerable<(string Target, string Name)> disks, bool inSet = false)
    {
        var list = disks.ToList();
        var shared = list.GroupBy(d => d.Name, StringComparer.Ordinal).Where(g => g.Count() > 1)
            .Select(g => g.Key).ToHashSet(StringComparer.Ordinal);
        var names = list.ToDictionary(d => d.Target, d => shared.Contains(d.Name) ? d.Target + "-" + d.Name : d.Name, StringComparer.Ordinal);
        // "vdb-x" could itself be another disk's own file name, and in a set a copy must not be named as the manifest,
        // the domain XML or another copy while it is written ("x.partial"): then every name gets its target in front
        // (targets are unique and hold no '-').
        if (Clash(names.Values, inSet))
            names = list.ToDictionary(d => d.Target, d => d.Target + "-" + d.Name, StringComparer.Ordinal);
        return names;
    }

    private static bool Clash(IReadOnlyCollection<string> names, bool inSet)
    {
        var used = new HashSet<string>(StringComparer.Ordinal);
        if (inSet)
        {
            used.Add(ManifestFileName);
            used.Add(DomainXmlFileName);
        }
        if (names.Any(n => !used.Add(n)))
            return true;
        return inSet && names.Any(n => NamesBesideCopy(n).Any(used.Contains));
    }

    /// <summary>The other names a copy <paramref name="fileName"/> gives files in its set: its partial while it is
    /// written, its digest list, and the list's partial. No copy may have one of another copy's.</summary>
    public static IReadOnlyList<string> NamesBesideCopy(string fileName) =>
        [Partial(fileName), fileName + DigestListSuffix, Partial(fileName + DigestListSuffix)];

    // ---------------------------------------------------------------- the way back (restore, boot test)

    /// <summary>True for a folder name that is a run id (yyyyMMdd-HHmmss); its time, in UTC, in <paramref name="utc"/>.</summary>
    public static bool TryParseRunId(string name, out DateTime utc) =>
        DateTime.TryParseExact(name, "yyyyMMdd-HHmmss", CultureInfo.InvariantCulture,
            DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out utc);

    /// <summary>The run folder Repair-KvmBackup keeps overlays in ("repaired-yyyyMMdd-HHmmss"), with its time.</summary>
    public static bool TryParseRetentionFolder(string name, out DateTime utc)
    {
        const string repaired = "repaired-";
        return TryParseRunId(name.StartsWith(repaired, StringComparison.Ordinal) ? name[repaired.Length..] : name, out utc);
    }

    /// <summary>The throw-away domain of a boot test: the set's domain, "-boottest-", 8 random hex digits. Never
    /// the name of a domain that exists: the suffix is new each time.</summary>
    public static string BootTestDomainName(string domain) => $"{domain}{BootTestMarker}{Guid.NewGuid():N}"[..(domain.Length + BootTestMarker.Length + 8)];

    public const string BootTestMarker = "-boottest-";

    /// <summary>A boot test's overlay on top of one copy, in the boot test's own folder.</summary>
    public static string BootTestOverlay(string setFile) => setFile + ".boottest.qcow2";

    /// <summary>The path of <see cref="BootTestOverlay"/> in the boot test's folder (the copy's name came from a
    /// manifest: proven to stay inside, <paramref name="whose"/> starts the error).</summary>
    public static string BootTestOverlayPath(string bootTestFolder, string setFile, string whose) =>
        FileSystemPaths.JoinInside(bootTestFolder, BootTestOverlay(setFile), whose);

    /// <summary>The throw-away domain's definition, in the boot test's folder: &lt;folder&gt;/&lt;boot-test domain&gt;.xml.</summary>
    public static string BootTestDefinitionPath(string bootTestFolder, string bootTestDomain, string whose) =>
        FileSystemPaths.JoinInside(bootTestFolder, bootTestDomain + ".xml", whose);

    /// <summary>A restored disk while it is written and checked (beside its final name).</summary>
    public static string RestorePartial(string fileName) => fileName + ".restore" + PartialSuffix;

    /// <summary>The path of <see cref="RestorePartial"/> in the folder restored into.</summary>
    public static string RestorePartialPath(string folder, string fileName, string whose) =>
        FileSystemPaths.JoinInside(folder, RestorePartial(fileName), whose);

    /// <summary>A restored disk in the folder restored into: &lt;folder&gt;/&lt;the copy's name in the set&gt; (a name from
    /// a manifest: proven to stay inside).</summary>
    public static string RestoredFilePath(string folder, string setFile, string whose) =>
        FileSystemPaths.JoinInside(folder, setFile, whose);

    /// <summary>Where an in-place restore keeps the file it replaced, beside it, until the user removes it.</summary>
    public static string KeptAside(string fileName, DateTime utc) => fileName + ".before-restore-" + RunId(utc);

    /// <summary>The path of <see cref="KeptAside"/>: beside the file it keeps, in <paramref name="folder"/>.</summary>
    public static string KeptAsidePath(string folder, string fileName, DateTime utc, string whose) =>
        FileSystemPaths.JoinInside(folder, KeptAside(fileName, utc), whose);

    /// <summary>The definition a restore under a new name writes beside the restored disks.</summary>
    public static string RestoredDefinition(string newName) => newName + ".xml";

    /// <summary>The path of <see cref="RestoredDefinition"/> in the folder restored into.</summary>
    public static string RestoredDefinitionPath(string folder, string newName) => Path.Combine(folder, RestoredDefinition(newName));

    /// <summary>A file the restored (or boot-tested) domain writes instead of one of the source VM's character
    /// devices (serial log, console log, socket): &lt;name&gt;-&lt;device&gt;&lt;n&gt;.&lt;ext&gt;.</summary>
    public static string DeviceFile(string domain, string device, int index, string extension) =>
        $"{domain}-{device}{index}.{extension}";

    /// <summary>The path of <see cref="DeviceFile"/> in the folder the domain's device files go to.</summary>
    public static string DeviceFilePath(string deviceFolder, string domain, string device, int index, string extension) =>
        Path.Combine(deviceFolder, DeviceFile(domain, device, index, extension));
}
