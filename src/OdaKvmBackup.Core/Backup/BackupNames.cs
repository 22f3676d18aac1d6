using System.Globalization;

namespace OdaKvmBackup.Core.Backup;

/// <summary>
/// The one place that decides file and folder names: overlays, backup sets and their files, retained and
/// repaired overlays, partial copies. Every name a run uses is decided here once, at its start, for all its disks
/// together, so that two disks can never be given the same name anywhere.
/// </summary>
public static class BackupNames
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

    /// <summary>Where Copy-VmDisk -Force keeps a set it would otherwise have written over.</summary>
    public static string ReplacedSetFolder(string setFolder, DateTime utc) => setFolder + ".replaced-" + RunId(utc);

    /// <summary>A run's retention folder, relative to the retention path: &lt;domain&gt;/&lt;run&gt;.</summary>
    public static string RetentionFolder(string domain, string runId) => domain + "/" + runId;

    /// <summary>The folder Repair-KvmBackup keeps an overlay in when no run recorded it.</summary>
    public static string RepairFolder(string domain, DateTime utc) => domain + "/repaired-" + RunId(utc);

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
        return inSet && names.Any(n => used.Contains(Partial(n)));
    }

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

    /// <summary>A restored disk while it is written and checked (beside its final name).</summary>
    public static string RestorePartial(string fileName) => fileName + ".restore" + PartialSuffix;

    /// <summary>Where an in-place restore keeps the file it replaced, beside it, until the user removes it.</summary>
    public static string KeptAside(string fileName, DateTime utc) => fileName + ".before-restore-" + RunId(utc);

    /// <summary>The definition a restore under a new name writes beside the restored disks.</summary>
    public static string RestoredDefinition(string newName) => newName + ".xml";

    /// <summary>A file the restored (or boot-tested) domain writes instead of one of the source VM's character
    /// devices (serial log, console log, socket): &lt;name&gt;-&lt;device&gt;&lt;n&gt;.&lt;ext&gt;.</summary>
    public static string DeviceFile(string domain, string device, int index, string extension) =>
        $"{domain}-{device}{index}.{extension}";
}
