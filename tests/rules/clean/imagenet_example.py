"""Shaped like pytorch/examples imagenet/main.py: AverageMeter, train/validate, AMP scaler."""
import torch
import torch.nn as nn
import torchvision.models as models
from torch.optim.lr_scheduler import StepLR


class AverageMeter:
    def __init__(self):
        self.sum = 0
        self.count = 0

    def update(self, val, n=1):
        self.sum += val * n
        self.count += n


def train(train_loader, model, criterion, optimizer, scaler, epoch):
    losses = AverageMeter()
    model.train()
    for i, (images, target) in enumerate(train_loader):
        with torch.autocast("cuda"):
            output = model(images)
            loss = criterion(output, target)
        losses.update(loss.item(), images.size(0))
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()


def validate(val_loader, model, criterion):
    def run_validate(loader):
        with torch.no_grad():
            for i, (images, target) in enumerate(loader):
                output = model(images)
                loss = criterion(output, target)
                print(loss.item())

    losses = AverageMeter()
    model.eval()
    run_validate(val_loader)
    return losses.sum


def main(train_loader, val_loader, epochs):
    model = models.resnet50(weights=None)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda")
    scheduler = StepLR(optimizer, step_size=30, gamma=0.1)
    best_acc1 = 0
    for epoch in range(epochs):
        train(train_loader, model, criterion, optimizer, scaler, epoch)
        acc1 = validate(val_loader, model, criterion)
        scheduler.step()
        best_acc1 = max(acc1, best_acc1)
