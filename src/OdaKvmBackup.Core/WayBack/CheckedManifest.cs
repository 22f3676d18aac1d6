using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace OdaKvmBackup.Core.WayBack;

/// <summary>
/// A backup.json read from a store and found to satisfy every rule below. Whoever can write to a backup store can
/// write any backup.json, so what a set says about itself is untrusted until it is checked here, in one place. The
/// only way to get one is <see cref="BackupSet.LoadAsync"/> (a run's own manifest, which it writes, is a
/// <see cref="BackupManifest"/> and never one of these), and a <see cref="BackupSetInfo"/> is made only from one:
/// code that holds a set knows that it was checked.
/// </summary>
/// <remarks>
/// The rules: the manifest's Format is <see cref="KnownFormat"/> or <see cref="EarlierFormat"/>; its DomainName and RunId are the folders it sits
/// in (&lt;destination&gt;/&lt;domain&gt;/&lt;run id&gt;), so a set's identity and time are those of the store's layout; Status
/// is Complete, Incomplete or InProgress; Disks and ExcludedDisks are lists without null entries. Each disk has a
/// Target that is a device name (vda, sdb, nvme0n1), unique; a File that is a plain file name in the set's folder (no
/// '/', NUL or control character, not '.', '..', backup.json, domain.xml or the name another copy has while it is
/// written), unique; a Format raw or qcow2; an absolute Source; sizes that are not negative, DataBytes not above
/// SizeBytes; a ContentDigest (and, for a Complete set, a SizeBytes) that is a SHA-256 in hex; segment digests
/// that fit the copy; no File is the name another copy gives a file beside it (its partial, its digest list
/// "x.digests" and that list's partial: see <see cref="BackupNames.NamesBesideCopy"/>). Format OdaKvmBackup/3 (issue
/// 15) asks, in a Complete set, for Digests (the SHA-256 of the copy's digest list) instead of ContentDigest; BasedOn
/// is a run id or nothing; StoredAs is "full", "reflink" or "local copy"; the Bytes*
/// counters are not negative.
/// </remarks>
internal sealed partial class CheckedManifest
{
    /// <summary>The Format of backup.json this version writes (issue 15: copies described by block digest lists).</summary>
    public const string KnownFormat = "OdaKvmBackup/3";

    /// <summary>The Format of sets written by earlier versions (ContentDigest, SegmentDigests), still read, verified and
    /// restored. A manifest without a Format is read as this.</summary>
    public const string EarlierFormat = "OdaKvmBackup/2";

    /// <summary>What a disk's StoredAs may say.</summary>
    public static readonly IReadOnlyList<string> StoredAsValues = [StoredFull, Stores.FileClone.Reflink, Stores.FileClone.LocalCopy];

    /// <summary>StoredAs of a copy every block of which was written (no base).</summary>
    public const string StoredFull = "full";

    /// <summary>The largest segment a manifest may announce (the module uses 16 MiB).</summary>
    public const long MaxSegmentSize = 1L << 30;

    private CheckedManifest(BackupManifest manifest, DateTime runTimeUtc)
    {
        Manifest = manifest;
        RunTimeUtc = runTimeUtc;
    }

    /// <summary>The manifest, checked. Nothing changes it afterwards.</summary>
    internal BackupManifest Manifest { get; }

    /// <summary>The time the set's run id (its folder) names, in UTC: what sets are ordered and aged by.</summary>
    public DateTime RunTimeUtc { get; }

    /// <summary>Checks a manifest read from <paramref name="setFolder"/> (&lt;domain&gt;/&lt;run id&gt;, relative to the
    /// store's root). Throws BackupSetUnreadable naming <paramref name="where"/> and every rule it breaks.</summary>
    internal static CheckedManifest Check(BackupManifest manifest, string setFolder, string where)
    {
        var problems = new List<string>();
        var parts = setFolder.Split('/');
        var runTime = DateTime.MinValue;
        if (parts.Length != 2 || !FileSystemPaths.IsPlainName(parts[0]) || !BackupNames.TryParseRunId(parts[1], out runTime))
        {
            problems.Add($"its folder {FileSystemPaths.Quote(setFolder)} is not <domain>/<run id>");
        }
        else
        {
            if (manifest.DomainName != parts[0])
                problems.Add($"its DomainName {FileSystemPaths.Quote(manifest.DomainName)} is not the folder it sits in ('{parts[0]}')");
            if (manifest.RunId != parts[1])
                problems.Add($"its RunId {FileSystemPaths.Quote(manifest.RunId)} is not the folder it sits in ('{parts[1]}')");
        }
        if (manifest.Format is not (KnownFormat or EarlierFormat))
            problems.Add($"its Format {FileSystemPaths.Quote(manifest.Format)} is not one this version of OdaKvmBackup reads ({KnownFormat} or {EarlierFormat})");
        if (!BackupManifest.TryParseStatus(manifest.StatusName, out var status))
            problems.Add($"its Status {FileSystemPaths.Quote(manifest.StatusName)} is not Complete, Incomplete or InProgress");
        if (manifest.SnapshotName is null)
            problems.Add("its SnapshotName is null");
        if (manifest.ExcludedDisks is null)
            problems.Add("its \"ExcludedDisks\" is null");
        else if (manifest.ExcludedDisks.Any(e => e is null))
            problems.Add("its \"ExcludedDisks\" holds a null entry");
        if (manifest.Disks is null)
            problems.Add("its \"Disks\" is missing or null");
        else if (manifest.Disks.Any(d => d is null))
            problems.Add("its \"Disks\" holds a null entry");
        else
            CheckDisks(manifest.Disks, status == BackupSetStatus.Complete, manifest.Format == KnownFormat, problems);

        if (problems.Count > 0)
        {
            throw new BackupException(ErrorIds.BackupSetUnreadable, BackupErrorCategory.InvalidData,
                $"The manifest '{where}' cannot be trusted: {string.Join("; ", problems)}.",
                "Nothing was read from this set. OdaKvmBackup never writes such a manifest: the set was changed on the backup store (or written by a newer version of OdaKvmBackup). Keep its folder aside to inspect it, and back the VM up again.",
                where);
        }
        return new CheckedManifest(manifest, runTime);
    }

    private static void CheckDisks(IReadOnlyList<ManifestDisk> disks, bool complete, bool digestLists, List<string> problems)
    {
        var targets = new HashSet<string>(StringComparer.Ordinal);
        var files = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < disks.Count; i++)
        {
            var disk = disks[i];
            var label = disk.Target is { } t && TargetPattern().IsMatch(t) ? t : $"disk {i + 1}";
            if (disk.Target is null || !TargetPattern().IsMatch(disk.Target))
                problems.Add($"the Target {FileSystemPaths.Quote(disk.Target)} of disk {i + 1} is not a device name (such as vda, sdb or nvme0n1)");
            else if (!targets.Add(disk.Target))
                problems.Add($"two disks have the Target '{disk.Target}'");
            if (WhyNotAFileName(disk.File) is { } why)
                problems.Add($"the File of {label}, {FileSystemPaths.Quote(disk.File)}, is not a plain file name in the set's folder: {why}");
            else if (!files.Add(disk.File))
                problems.Add($"two disks have the File '{disk.File}'");
            if (disk.Format is not ("raw" or "qcow2"))
                problems.Add($"the Format of {label}, {FileSystemPaths.Quote(disk.Format)}, is neither raw nor qcow2");
            if (disk.Source is null || !disk.Source.StartsWith('/') || disk.Source.Any(char.IsControl))
                problems.Add($"the Source of {label}, {FileSystemPaths.Quote(disk.Source)}, is not an absolute path");
            if (disk.SizeBytes is < 0)
                problems.Add($"the SizeBytes of {label} is negative ({disk.SizeBytes})");
            if (disk.VirtualSizeBytes is < 0)
                problems.Add($"the VirtualSizeBytes of {label} is negative ({disk.VirtualSizeBytes})");
            if (disk.DataBytes is < 0)
                problems.Add($"the DataBytes of {label} is negative ({disk.DataBytes})");
            else if (disk.DataBytes > disk.SizeBytes)
                problems.Add($"the DataBytes of {label} ({disk.DataBytes}) is more than its SizeBytes ({disk.SizeBytes})");
            // What a Complete set's copy is verified with: its digest list (OdaKvmBackup/3) or its content digest (/2).
            var digest = digestLists ? (Name: "Digests", Value: disk.Digests) : (Name: "ContentDigest", Value: disk.ContentDigest);
            if (complete && (digest.Value is null || disk.SizeBytes is null))
                problems.Add($"{label} has no {(digest.Value is null ? digest.Name : "SizeBytes")}, yet the set says it is Complete");
            if (disk.ContentDigest is not null && !IsSha256(disk.ContentDigest))
                problems.Add($"the ContentDigest of {label} is not a SHA-256 in hex");
            if (disk.Digests is not null && !IsSha256(disk.Digests))
                problems.Add($"the Digests of {label} is not a SHA-256 in hex");
            CheckSegments(disk, label, problems);
            CheckIncremental(disk, label, problems);
        }
        // The names a copy gives files beside it (x.partial while it is written, its digest list x.digests and
        // x.digests.partial) must not be copies of their own, as BackupNames decides: a list would be read as a copy.
        foreach (var file in files.Order(StringComparer.Ordinal))
        {
            var beside = BackupNames.NamesBesideCopy(file);
            var what = new[] { $"the copy '{file}' has while it is written", $"of the digest list of the copy '{file}'", $"of the digest list of the copy '{file}' while it is written" };
            for (var i = 0; i < beside.Count; i++)
            {
                if (files.Contains(beside[i]))
                    problems.Add($"the File '{beside[i]}' is the name {what[i]}");
            }
        }
    }

    private static void CheckSegments(ManifestDisk disk, string label, List<string> problems)
    {
        if (disk.SegmentSize is { } size && (size < 4096 || size > MaxSegmentSize || size % 4096 != 0))
        {
            problems.Add($"the SegmentSize of {label} ({size}) is not a multiple of 4 KiB up to 1 GiB");
            return;
        }
        if (disk.SegmentDigests is not { Count: > 0 } digests)
            return;
        if (disk.SegmentSize is not { } segmentSize)
        {
            problems.Add($"{label} has SegmentDigests but no SegmentSize");
            return;
        }
        var last = disk.SizeBytes is { } copySize ? (copySize - 1) / segmentSize : long.MaxValue;
        if (digests.Keys.Where(index => index < 0 || index > last).Select(index => (long?)index).FirstOrDefault() is { } beyond)
            problems.Add($"segment {beyond} of {label} lies beyond the end of its copy");
        if (digests.Values.Any(d => d is null || !IsSha256(d)))
            problems.Add($"a segment digest of {label} is not a SHA-256 in hex");
    }

    /// <summary>Issue 15's record of how a copy was made: information for the user, checked all the same (it is shown).</summary>
    private static void CheckIncremental(ManifestDisk disk, string label, List<string> problems)
    {
        if (disk.BasedOn is not null && (!BackupNames.TryParseRunId(disk.BasedOn, out var basedOn) || BackupNames.RunId(basedOn) != disk.BasedOn))
            problems.Add($"the BasedOn of {label}, {FileSystemPaths.Quote(disk.BasedOn)}, is not a run id (yyyyMMdd-HHmmss)");
        if (disk.StoredAs is not null && !StoredAsValues.Contains(disk.StoredAs, StringComparer.Ordinal))
            problems.Add($"the StoredAs of {label}, {FileSystemPaths.Quote(disk.StoredAs)}, is not one of {string.Join(", ", StoredAsValues.Select(v => $"'{v}'"))}");
        if (disk.FullBecause is not null && disk.FullBecause.Any(char.IsControl))
            problems.Add($"the FullBecause of {label} holds a control character");
        foreach (var (name, value) in new[] { ("BytesRead", disk.BytesRead), ("BytesSent", disk.BytesSent), ("BytesCloned", disk.BytesCloned), ("BytesResent", disk.BytesResent) })
        {
            if (value is < 0)
                problems.Add($"the {name} of {label} is negative ({value})");
        }
    }

    /// <summary>Why a manifest's File is not a plain file name of a copy in the set's folder; null when it is.</summary>
    internal static string? WhyNotAFileName(string? file)
    {
        if (file is null)
            return "it is missing";
        if (file.Length == 0)
            return "it is empty";
        if (file.Contains('/', StringComparison.Ordinal))
            return "it holds a '/'";
        if (file is "." or "..")
            return "it is '.' or '..'";
        if (file.Any(char.IsControl))
            return "it holds a NUL or another control character";
        if (Encoding.UTF8.GetByteCount(file) > 255)
            return "it is longer than 255 bytes";
        if (file is BackupNames.ManifestFileName or BackupNames.DomainXmlFileName)
            return "that is the set's own " + file;
        return null;
    }

    private static bool IsSha256(string digest) => digest.Length == 64 && digest.All(char.IsAsciiHexDigitLower);

    /// <summary>A device name as libvirt's target dev: lower-case letters, then letters or digits (vda, sdb, hdc, nvme0n1).</summary>
    [GeneratedRegex("^[a-z][a-z0-9]{0,15}$", RegexOptions.CultureInvariant)]
    private static partial Regex TargetPattern();

    /// <summary>A time read from JSON as UTC (a manifest edited by hand may carry an offset).</summary>
    internal static DateTime AsUtc(DateTime time) => time.Kind switch
    {
        DateTimeKind.Local => time.ToUniversalTime(),
        DateTimeKind.Utc => time,
        _ => DateTime.SpecifyKind(time, DateTimeKind.Utc),
    };

    internal static string Describe(DateTime utc) => utc.ToString("yyyy-MM-dd HH:mm:ss 'UTC'", CultureInfo.InvariantCulture);
}
