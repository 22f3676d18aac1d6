using System.Xml;
using System.Xml.Linq;
using OdaKvmBackup.Core.Backup;

namespace OdaKvmBackup.Core.Libvirt;

/// <summary>How to turn a saved domain.xml into the definition of a copy of that VM.</summary>
/// <param name="NewName">The copy's name.</param>
/// <param name="Disks">Target (vda) -> the file the copy's disk uses, and that file's format. Disks of the saved
/// XML that are not in here are left out of the copy (with a note).</param>
/// <param name="DeviceFolder">Where the copy's serial/console logs and sockets go (each renamed after the copy).</param>
/// <param name="AllowedFolders">The only folders (besides read-only boot files: emulator, firmware, kernel, initrd)
/// a path in the copy's definition may lie in: the restored disks' folder, the device folder.</param>
/// <param name="DropInterfaces">True for a boot test: no network at all. False for a restore: the interfaces stay,
/// without their MAC addresses (libvirt gives new ones).</param>
/// <param name="SerialToFile">True for a boot test: every serial port and console writes to a log file in
/// <paramref name="DeviceFolder"/>, so that a guest without an agent can be watched booting.</param>
public sealed record DomainCopyRequest(
    string NewName,
    IReadOnlyDictionary<string, (string File, string Format)> Disks,
    string DeviceFolder,
    IReadOnlyList<string> AllowedFolders,
    bool DropInterfaces,
    bool SerialToFile = false);

/// <summary>The copy's definition, and what was changed or left out, in words.</summary>
public sealed record DomainCopy(string Xml, IReadOnlyList<string> Notes, bool HasGuestAgentChannel, string? ConsoleLog);

/// <summary>
/// Rewrites a saved domain definition so that a copy of the VM can be defined (or created) beside the original
/// without touching anything of it: a new name, no UUID (libvirt makes one), no MAC addresses (libvirt makes new
/// ones), disks on the restored files, serial/console logs and sockets in a folder of the copy's own, no NVRAM
/// file of the original (libvirt makes a fresh one from the firmware's template), CD-ROMs ejected. What cannot be
/// rewritten safely (host devices, shared folders, any other path of the host) is refused with an error that says
/// what it is.
/// </summary>
public static class DomainXmlRewriter
{
    /// <summary>Elements whose text is a read-only file the copy may share with the original.</summary>
    private static readonly HashSet<string> SharedReadOnlyTexts = new(StringComparer.Ordinal) { "emulator", "loader", "kernel", "initrd", "dtb" };

    /// <summary>Attributes that can hold a host path.</summary>
    private static readonly HashSet<string> PathAttributes = new(StringComparer.Ordinal) { "file", "dev", "path", "dir", "socket", "template", "volume" };

    private static readonly string[] CharacterDevices = ["serial", "parallel", "console", "channel"];

    public static DomainCopy Rewrite(string savedXml, DomainCopyRequest request)
    {
        XDocument doc;
        try
        {
            doc = XDocument.Parse(savedXml);
        }
        catch (XmlException ex)
        {
            throw NotRestorable($"the saved domain.xml cannot be read: {ex.Message}", request.NewName);
        }
        var root = doc.Root is { Name.LocalName: "domain" } r ? r : throw NotRestorable("the saved domain.xml has no <domain> element", request.NewName);
        var oldName = (string?)root.Element("name") ?? "";
        var notes = new List<string>();

        root.Attribute("id")?.Remove();
        root.SetElementValue("name", request.NewName);
        root.Element("uuid")?.Remove();
        root.Element("genid")?.Remove();
        foreach (var label in root.Elements("seclabel").Where(s => (string?)s.Attribute("type") == "dynamic").ToList())
            label.Remove();

        if (root.Element("os")?.Element("nvram") is { } nvram)
        {
            nvram.Remove();
            notes.Add($"The NVRAM file of '{oldName}' ({nvram.Value.Trim()}) is not used: libvirt makes a fresh one from the firmware's template (UEFI boot entries start from their defaults).");
        }

        var devices = root.Element("devices") ?? throw NotRestorable("the saved domain.xml has no <devices>", request.NewName);
        if (devices.Elements("hostdev").Any())
            throw NotRestorable($"'{oldName}' has host devices (<hostdev>, PCI or USB passthrough): a copy started beside it would take them away from it", request.NewName);
        if (devices.Elements("filesystem").Any())
            throw NotRestorable($"'{oldName}' shares host folders with its guest (<filesystem>): a copy would write into the same folders", request.NewName);

        RewriteDisks(devices, request, oldName, notes);
        RewriteInterfaces(devices, request, notes);
        var consoleLog = RewriteCharacterDevices(devices, request);
        RewriteGraphics(devices);

        var hasAgent = devices.Elements("channel").Any(c => (string?)c.Element("target")?.Attribute("name") == DomainXml.GuestAgentChannelName);
        RequireOnlyAllowedPaths(root, request);
        return new DomainCopy(doc.ToString(), notes, hasAgent, consoleLog);
    }

    private static void RewriteDisks(XElement devices, DomainCopyRequest request, string oldName, List<string> notes)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var disk in devices.Elements("disk").ToList())
        {
            var device = (string?)disk.Attribute("device") ?? "disk";
            var target = (string?)disk.Element("target")?.Attribute("dev") ?? "";
            disk.Elements("backingStore").Remove();
            disk.Elements("mirror").Remove();
            if (device is "cdrom" or "floppy")
            {
                if (disk.Element("source") is { } media)
                {
                    notes.Add($"{device} {target}: ejected (it held {SourceText(media)}); insert media by hand if the copy needs it.");
                    media.Remove();
                }
                disk.SetAttributeValue("type", "file");
                continue;
            }
            if (!request.Disks.TryGetValue(target, out var file))
            {
                notes.Add($"Disk {target} ({SourceText(disk.Element("source"))}) is not in the backup set: the copy has no {target}.");
                disk.Remove();
                continue;
            }
            seen.Add(target);
            disk.SetAttributeValue("type", "file");
            disk.Elements("source").Remove();
            var source = new XElement("source", new XAttribute("file", file.File));
            var driver = disk.Element("driver");
            if (driver is null)
            {
                driver = new XElement("driver", new XAttribute("name", "qemu"));
                disk.AddFirst(driver);
            }
            driver.SetAttributeValue("type", file.Format);
            driver.AddAfterSelf(source);
            disk.Elements("shareable").Remove();
        }
        var missing = request.Disks.Keys.Where(t => !seen.Contains(t)).ToList();
        if (missing.Count > 0)
            throw NotRestorable($"the saved definition of '{oldName}' has no disk {string.Join(", ", missing)}, which the backup set holds", request.NewName);
    }

    private static void RewriteInterfaces(XElement devices, DomainCopyRequest request, List<string> notes)
    {
        var interfaces = devices.Elements("interface").ToList();
        if (request.DropInterfaces)
        {
            if (interfaces.Count > 0)
                notes.Add($"{interfaces.Count} network interface(s) left out: the copy has no network.");
            interfaces.ForEach(i => i.Remove());
            return;
        }
        foreach (var nic in interfaces)
        {
            nic.Elements("mac").Remove();
            nic.Element("target")?.Remove(); // vnetN of the original
            nic.Elements("alias").Remove();
            if ((string?)nic.Attribute("type") is "vhostuser" or "hostdev")
                throw NotRestorable($"an interface of type '{(string?)nic.Attribute("type")}' is tied to one host socket or device", request.NewName);
        }
        if (interfaces.Count > 0)
            notes.Add($"{interfaces.Count} network interface(s) kept on the same networks, with new MAC addresses; the guest still has the original's IP settings.");
    }

    /// <summary>Serial, parallel, console and channel devices: their files and sockets move into the copy's device
    /// folder; the guest agent's socket is left for libvirt to make. Returns the boot test's console log.</summary>
    private static string? RewriteCharacterDevices(XElement devices, DomainCopyRequest request)
    {
        var renamed = new Dictionary<string, string>(StringComparer.Ordinal);
        string? consoleLog = null;
        string NewPath(string old, string device, int index, string extension)
        {
            if (!renamed.TryGetValue(old, out var path))
                renamed[old] = path = Path.Combine(request.DeviceFolder, BackupNames.DeviceFile(request.NewName, device, index, extension));
            return path;
        }
        foreach (var kind in CharacterDevices)
        {
            var index = 0;
            foreach (var chardev in devices.Elements(kind).ToList())
            {
                var type = (string?)chardev.Attribute("type") ?? "pty";
                var source = chardev.Element("source");
                if (request.SerialToFile && kind is "serial" or "console")
                {
                    var old = (string?)source?.Attribute("path") ?? $"<{kind} {index}>";
                    var path = kind == "console" && type is not "file" && source is null && consoleLog is not null ? consoleLog : NewPath(old, kind, index, "log");
                    chardev.SetAttributeValue("type", "file");
                    chardev.Elements("source").Remove();
                    chardev.AddFirst(new XElement("source", new XAttribute("path", path)));
                    consoleLog ??= path;
                }
                else if (type == "file" && source?.Attribute("path") is { } file)
                {
                    file.Value = NewPath(file.Value, kind, index, "log");
                }
                else if (type == "unix" && source is not null)
                {
                    var isVirtioChannel = kind == "channel" && (string?)chardev.Element("target")?.Attribute("type") == "virtio";
                    if (isVirtioChannel)
                        source.Remove(); // libvirt makes the socket under its own folder, per domain
                    else if (source.Attribute("path") is { } socket)
                        socket.Value = NewPath(socket.Value, kind, index, "sock");
                }
                else if (type == "pty")
                {
                    source?.Remove(); // the live /dev/pts/N of the original
                }
                if (chardev.Element("log")?.Attribute("file") is { } log)
                    log.Value = NewPath(log.Value, kind + "-log", index, "log");
                chardev.Elements("alias").Remove();
                index++;
            }
        }
        return consoleLog;
    }

    private static void RewriteGraphics(XElement devices)
    {
        foreach (var graphics in devices.Elements("graphics"))
        {
            if (graphics.Attribute("port") is not null || (string?)graphics.Attribute("autoport") == "no")
            {
                graphics.SetAttributeValue("autoport", "yes");
                graphics.SetAttributeValue("port", null);
                graphics.SetAttributeValue("tlsPort", null);
                graphics.SetAttributeValue("websocket", null);
            }
            graphics.SetAttributeValue("socket", null);
            foreach (var listen in graphics.Elements("listen").Where(l => l.Attribute("socket") is not null).ToList())
                listen.Remove();
        }
    }

    /// <summary>
    /// The last line of defence: every host path left in the copy's definition must lie in one of the copy's own
    /// folders, or be a read-only boot file (emulator, firmware, kernel, initrd, dtb). Anything else (a path this
    /// rewriter does not know how to move) is refused, naming the element and the path.
    /// </summary>
    public static void RequireOnlyAllowedPaths(XElement root, DomainCopyRequest request)
    {
        var allowed = request.AllowedFolders.Append(request.DeviceFolder).Select(FileSystemPaths.Normalize).ToList();
        bool Inside(string path) => allowed.Any(folder => FileSystemPaths.IsSameOrInside(path, folder));
        foreach (var element in root.DescendantsAndSelf().Where(e => !e.AncestorsAndSelf("metadata").Any()))
        {
            foreach (var attribute in element.Attributes().Where(a => PathAttributes.Contains(a.Name.LocalName) && a.Value.StartsWith('/')))
            {
                if (element.Name.LocalName == "rng" || element.Parent?.Name.LocalName == "rng")
                    continue;
                if (!Inside(attribute.Value))
                    throw NotRestorable($"<{element.Name.LocalName} {attribute.Name.LocalName}='{attribute.Value}'> (in <{element.Parent?.Name.LocalName}>) names a file of the host that a copy cannot share", request.NewName);
            }
            if (!element.HasElements && element.Value.StartsWith('/') && !SharedReadOnlyTexts.Contains(element.Name.LocalName)
                && element.Name.LocalName is not ("backend" or "description" or "title" or "cmdline"))
            {
                if (!Inside(element.Value.Trim()))
                    throw NotRestorable($"<{element.Name.LocalName}>{element.Value.Trim()}</{element.Name.LocalName}> names a file of the host that a copy cannot share", request.NewName);
            }
        }
    }

    /// <summary>Every disk source in a definition (file, block device, or a network/volume name), for the check
    /// against the host's production disks.</summary>
    public static IReadOnlyList<string> DiskSources(string xml) =>
        DomainXml.Parse(xml).Disks.Select(d => d.Source).OfType<string>().ToList();

    private static string SourceText(XElement? source) =>
        source is null ? "no source" : (string?)source.Attribute("file") ?? (string?)source.Attribute("dev") ?? (string?)source.Attribute("name") ?? "a source";

    private static BackupException NotRestorable(string why, string newName) =>
        new(ErrorIds.DomainXmlNotRestorable, BackupErrorCategory.InvalidData,
            $"The definition of '{newName}' cannot be made safely from the saved domain.xml: {why}.",
            "Restore the disks only (Restore-KvmBackup -Destination <folder> without -NewName) and define the VM by hand from domain.xml, leaving out what is named above.",
            newName);
}
