using System.Text.Json;
using System.Text.Json.Serialization;

namespace OdaKvmBackup.Core.WayBack;

internal sealed class ManifestDisk
{
    public required string Target { get; init; }
    public required string Source { get; init; }
    public required string Format { get; init; }
    public required string File { get; init; }
    public long? SizeBytes { get; set; }
    /// <summary>The disk's virtual size (what the guest sees), as qemu-img info read it from the disk when the run
    /// was planned: for a qcow2 copy it is not the file's size. Sets of earlier builds have none.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? VirtualSizeBytes { get; set; }
    public long? DataBytes { get; set; }
    /// <summary>The disk's content digest, as <see cref="VmDiskBackup.ContentDigest"/> (not a sha256sum).</summary>
    public string? ContentDigest { get; set; }
    /// <summary>For a copy on another host: the SHA-256 of each segment of <see cref="SegmentSize"/> bytes that holds
    /// data, by segment number (see <see cref="Copies.BlockDigestList.DataSegmentDigests"/>), so that the copy is checked where it lies
    /// (on the server, <see cref="Stores.IBackupStore.SegmentDigestsAsync"/>), never read back over the network.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? SegmentSize { get; set; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public SortedDictionary<long, string>? SegmentDigests { get; set; }
    /// <summary>Format OdaKvmBackup/3: the SHA-256 (hex) of the copy's block digest list, the file
    /// <see cref="BackupNames.DigestListInSet"/> beside the copy (see <see cref="Copies.BlockDigestList"/>). Replaces
    /// <see cref="ContentDigest"/> and <see cref="SegmentDigests"/>, which only sets of earlier versions have.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Digests { get; set; }
    /// <summary>The RunId of the set whose copy this one was built from (information only: nothing in this set
    /// needs that one); null when the disk was copied in full, <see cref="FullBecause"/> then says why.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? BasedOn { get; set; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? FullBecause { get; set; }
    /// <summary>How the copy was stored: <c>full</c> (every block written), <c>reflink</c> (a clone of the base
    /// sharing its blocks, changed blocks written into it), <c>local copy</c> (the base copied on the destination,
    /// changed blocks written into it).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? StoredAs { get; set; }
    /// <summary>Bytes read from the frozen disk, sent to the destination (written into the copy), taken from the
    /// base by the clone, and sent again because the base's copy of them no longer matched its own digests.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? BytesRead { get; set; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? BytesSent { get; set; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? BytesCloned { get; set; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? BytesResent { get; set; }
    public bool Verified { get; set; }
    /// <summary>How the copy was checked, in words.</summary>
    public string? VerifiedBy { get; set; }
}
